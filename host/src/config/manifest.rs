//! The app manifest (`--apps FILE`, or `[[app]]` tables in the config file): every hosted app with its
//! component, routes, environment, grants, limits and pool. Relative paths resolve against the manifest's
//! folder. Every mistake is one line naming the file, the app and the key: unknown keys, wrong types, duplicate
//! names, two apps with the same route, a component that is not there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::grants;
use crate::guest::{App, AppSource, Capabilities, Limits};
use crate::routing::{HostPattern, Route, Router, normalise_prefix};
use crate::site::{DedicatedPool, Site, Tenant};

/// The keys of one `[[app]]` table (`-` may stand for `_`).
const APP_KEYS: &[&str] = &[
    "name",
    "component",
    "hosts",
    "prefix",
    "env",
    "dirs",
    "allow_net",
    "guest_timeout",
    "max_memory",
    "limit_request_body",
    "max_requests",
    "workers",
    "user",
    "group",
];

/// What an app gets for the settings its table leaves out: the server's own flags.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub guest_timeout: Duration,
    pub max_memory_bytes: usize,
    pub body_limit: Option<u64>,
}

/// Reads the manifest at `path`. In a config file (`in_config`), keys other than `app` and `default_app` are
/// the server's flags and are left to the config layer.
pub fn load(path: &Path, in_config: bool, defaults: &Defaults) -> anyhow::Result<Site> {
    let where_ = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the app manifest {where_}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|err: toml::de::Error| anyhow::anyhow!("{where_}: invalid TOML: {}", super::one_line(&err)))?;
    let base = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    parse(&table, &base, in_config, defaults).map_err(|err| anyhow::anyhow!("{where_}: {err:#}"))
}

fn parse(table: &toml::Table, base: &Path, in_config: bool, defaults: &Defaults) -> anyhow::Result<Site> {
    if !in_config && let Some(key) = table.keys().find(|key| !matches!(key.as_str(), "app" | "default_app")) {
        bail!("unknown key {key:?} (a manifest holds [[app]] tables and default_app)");
    }
    let entries = match table.get("app") {
        Some(toml::Value::Array(entries)) if !entries.is_empty() => entries,
        Some(toml::Value::Array(_)) | None => bail!("no [[app]] table: a manifest lists at least one app"),
        Some(_) => bail!("key \"app\" must be [[app]] tables"),
    };
    let mut tenants = Vec::new();
    let mut routes = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        let Some(entry) = entry.as_table() else { bail!("app #{}: must be a table", position + 1) };
        let name = match entry.get("name") {
            Some(toml::Value::String(name)) => name.clone(),
            Some(_) => bail!("app #{}: key \"name\" must be a string", position + 1),
            None => bail!("app #{}: key \"name\" is missing", position + 1),
        };
        let context = || format!("app {name:?}");
        check_name(&name).with_context(context)?;
        if tenants.iter().any(|tenant: &Tenant| tenant.app.name == name) {
            bail!("app {name:?}: key \"name\": another app has the same name");
        }
        let index = tenants.len();
        let (tenant, app_routes) = tenant(&name, entry, base, defaults, index).with_context(context)?;
        for route in app_routes {
            if let Some(existing) =
                routes.iter().find(|existing: &&Route| existing.host == route.host && existing.prefix == route.prefix)
            {
                bail!(
                    "app {name:?}: keys \"hosts\"/\"prefix\": the route {route} is already app {:?}'s",
                    tenants[existing.app].app.name
                );
            }
            routes.push(route);
        }
        tenants.push(tenant);
    }
    let fallback = match table.get("default_app") {
        None => None,
        Some(toml::Value::String(name)) => match tenants.iter().position(|tenant| &tenant.app.name == name) {
            Some(index) => Some(index),
            None => bail!("key \"default_app\": no app is named {name:?}"),
        },
        Some(_) => bail!("key \"default_app\" must be the name of an app"),
    };
    Ok(Site { tenants, router: Router::new(routes, fallback), hosted: true })
}

/// A name that can appear in logs and process titles as is.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
    {
        bail!("key \"name\": {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// One `[[app]]` table: the tenant and its routes.
fn tenant(
    name: &str,
    entry: &toml::Table,
    base: &Path,
    defaults: &Defaults,
    index: usize,
) -> anyhow::Result<(Tenant, Vec<Route>)> {
    let mut keys = BTreeMap::new();
    for (key, value) in entry {
        let normal = key.replace('-', "_");
        if !APP_KEYS.contains(&normal.as_str()) {
            bail!("unknown key {key:?}");
        }
        keys.insert(normal, value);
    }
    let get = |key: &str| keys.get(key).copied();
    let component = match get("component") {
        Some(value) => string(value, "component")?,
        None => bail!("key \"component\" is missing"),
    };
    let source = match AppSource::parse(&component).context("key \"component\"")? {
        AppSource::File(path) => {
            let path = base.join(path);
            if !path.is_file() {
                bail!("key \"component\": {} does not exist", path.display());
            }
            AppSource::File(path)
        }
        sample => sample,
    };
    let hosts = match get("hosts") {
        Some(value) => strings(value, "hosts")?
            .iter()
            .map(|host| HostPattern::parse(host).map_err(|err| anyhow::anyhow!("key \"hosts\": {err}")))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let prefix = match get("prefix") {
        Some(value) => {
            normalise_prefix(&string(value, "prefix")?).map_err(|err| anyhow::anyhow!("key \"prefix\": {err}"))?
        }
        None => String::new(),
    };
    let hosts = if hosts.is_empty() { vec![HostPattern::Any] } else { hosts };
    let routes = hosts.into_iter().map(|host| Route { host, prefix: prefix.clone(), app: index }).collect();
    let env = match get("env") {
        Some(toml::Value::Table(table)) => table
            .iter()
            .map(|(key, value)| match value {
                toml::Value::String(text) if !key.is_empty() && !key.contains(['=', '\0']) && !text.contains('\0') => {
                    Ok((key.clone(), text.clone()))
                }
                toml::Value::String(_) => bail!("key \"env\": {key:?} is not a valid variable name"),
                _ => bail!("key \"env\": the value of {key:?} must be a string"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        Some(_) => bail!("key \"env\" must be a table of strings"),
        None => Vec::new(),
    };
    let dirs = match get("dirs") {
        Some(value) => grants::dirs_under(&strings(value, "dirs")?, base).context("key \"dirs\"")?,
        None => Vec::new(),
    };
    let net = match get("allow_net") {
        Some(value) => grants::net(&strings(value, "allow_net")?).context("key \"allow_net\"")?,
        None => Default::default(),
    };
    let guest_timeout = match get("guest_timeout") {
        Some(value) => match number(value, "guest_timeout")? {
            seconds if seconds.is_finite() && seconds > 0.0 => Duration::from_secs_f64(seconds),
            seconds => bail!("key \"guest_timeout\" must be a positive number of seconds, not {seconds}"),
        },
        None => defaults.guest_timeout,
    };
    let max_memory_bytes = match get("max_memory") {
        Some(value) => match integer(value, "max_memory")? {
            mib @ 1..=65536 => usize::try_from(mib)?.saturating_mul(1 << 20),
            mib => bail!("key \"max_memory\" must be from 1 to 65536 MiB, not {mib}"),
        },
        None => defaults.max_memory_bytes,
    };
    let body_limit = match get("limit_request_body") {
        Some(value) => match integer(value, "limit_request_body")? {
            0 => None,
            bytes => Some(bytes),
        },
        None => defaults.body_limit,
    };
    let max_requests = match get("max_requests") {
        Some(value) => integer(value, "max_requests")?,
        None => 0,
    };
    let user = get("user").map(|value| string(value, "user")).transpose()?;
    let group = get("group").map(|value| string(value, "group")).transpose()?;
    let pool = match get("workers") {
        Some(value) => match integer(value, "workers")? {
            0 => bail!("key \"workers\" must be at least 1"),
            workers => {
                let user = user.as_deref().map(super::parse_user).transpose().context("key \"user\"")?;
                let group = group.as_deref().map(super::parse_group).transpose().context("key \"group\"")?;
                if let (Some(user), None) = (user, group) {
                    crate::process::account_of(user).context("key \"user\"")?;
                }
                let workers = u32::try_from(workers).context("key \"workers\" is too large")?;
                Some(DedicatedPool { workers, user, group })
            }
        },
        None if user.is_some() || group.is_some() => {
            bail!("keys \"user\"/\"group\" need \"workers\": only a dedicated pool runs under its own user")
        }
        None => None,
    };
    let app = App {
        name: name.to_string(),
        source,
        env,
        capabilities: Capabilities { dirs, net },
        limits: Limits { guest_timeout, max_memory_bytes },
    };
    Ok((Tenant { app, body_limit, max_requests, pool }, routes))
}

fn string(value: &toml::Value, key: &str) -> anyhow::Result<String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        _ => bail!("key {key:?} must be a string"),
    }
}

/// A string or a list of strings.
fn strings(value: &toml::Value, key: &str) -> anyhow::Result<Vec<String>> {
    match value {
        toml::Value::String(text) => Ok(vec![text.clone()]),
        toml::Value::Array(items) => items.iter().map(|item| string(item, key)).collect(),
        _ => bail!("key {key:?} must be a string or a list of strings"),
    }
}

fn integer(value: &toml::Value, key: &str) -> anyhow::Result<u64> {
    match value {
        toml::Value::Integer(number) if *number >= 0 => Ok(*number as u64),
        _ => bail!("key {key:?} must be a whole number, 0 or more"),
    }
}

fn number(value: &toml::Value, key: &str) -> anyhow::Result<f64> {
    match value {
        toml::Value::Integer(number) => Ok(*number as f64),
        toml::Value::Float(number) => Ok(*number),
        _ => bail!("key {key:?} must be a number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults =
        Defaults { guest_timeout: Duration::from_secs(30), max_memory_bytes: 128 << 20, body_limit: None };

    fn site(text: &str) -> anyhow::Result<Site> {
        parse(&text.parse::<toml::Table>().unwrap(), Path::new("."), false, &DEFAULTS)
    }

    fn error(text: &str) -> String {
        format!("{:#}", site(text).unwrap_err())
    }

    #[test]
    fn a_manifest_lists_apps_with_their_own_settings() {
        let site = site(
            r#"
            default_app = "echo"
            [[app]]
            name = "hello"
            component = "sample:hello"
            hosts = ["a.test", "*.a.test"]
            env = { GREETING = "hi" }
            [[app]]
            name = "echo"
            component = "sample:echo"
            prefix = "/echo/"
            guest-timeout = 1.5
            max_memory = 16
            limit_request_body = 10
            [[app]]
            name = "evil"
            component = "sample:hello"
            hosts = "evil.test"
            workers = 2
            max_requests = 7
            "#,
        )
        .unwrap();
        assert_eq!(site.tenants.len(), 3);
        assert_eq!(site.tenants[0].app.env, vec![("GREETING".to_string(), "hi".to_string())]);
        assert_eq!(site.tenants[1].app.limits.guest_timeout, Duration::from_millis(1500));
        assert_eq!(site.tenants[1].app.limits.max_memory_bytes, 16 << 20);
        assert_eq!(site.tenants[1].body_limit, Some(10));
        assert_eq!(site.tenants[2].pool.map(|pool| pool.workers), Some(2));
        assert_eq!(site.tenants[2].max_requests, 7);
        assert_eq!(site.tenants[0].app.limits.guest_timeout, Duration::from_secs(30));
        let route =
            |host: &str, path: &str| site.router.route(Some(host), path).map(|routed| (routed.app, routed.script_name));
        assert_eq!(route("b.a.test", "/x"), Some((0, String::new())));
        assert_eq!(route("other", "/echo/x"), Some((1, "/echo".into())));
        assert_eq!(route("evil.test", "/echo"), Some((2, String::new())));
        assert_eq!(route("other", "/x"), Some((1, String::new())));
    }

    #[test]
    fn mistakes_name_the_app_and_the_key() {
        let app = "[[app]]\nname = \"a\"\ncomponent = \"sample:hello\"\n";
        assert!(error(&format!("{app}wrokers = 1")).contains("app \"a\": unknown key \"wrokers\""));
        assert!(
            error(&format!("{app}[[app]]\nname = \"a\"\ncomponent = \"sample:echo\"\nprefix = \"/e\""))
                .contains("app \"a\": key \"name\": another app has the same name")
        );
        assert!(
            error(&format!("{app}[[app]]\nname = \"b\"\ncomponent = \"sample:echo\""))
                .contains("app \"b\": keys \"hosts\"/\"prefix\": the route */ is already app \"a\"'s")
        );
        assert!(
            error("[[app]]\nname = \"c\"\ncomponent = \"missing.wasm\"")
                .contains("app \"c\": key \"component\": ./missing.wasm does not exist")
        );
        assert!(
            error("[[app]]\nname = \"c\"\ncomponent = \"sample:nope\"")
                .contains("app \"c\": key \"component\": unknown sample")
        );
        assert!(error("[[app]]\ncomponent = \"sample:hello\"").contains("app #1: key \"name\" is missing"));
        assert!(error(&format!("{app}workers = 0")).contains("app \"a\": key \"workers\" must be at least 1"));
        assert!(error(&format!("{app}hosts = [\"a b\"]")).contains("app \"a\": key \"hosts\""));
        assert!(
            error(&format!("{app}env = {{ A = 1 }}"))
                .contains("app \"a\": key \"env\": the value of \"A\" must be a string")
        );
        assert!(error(&format!("{app}user = \"root\"")).contains("need \"workers\""));
        assert!(error(&format!("default_app = \"z\"\n{app}")).contains("key \"default_app\": no app is named \"z\""));
        assert!(error("workers = 3").contains("unknown key \"workers\""));
        assert!(error("").contains("no [[app]] table"));
    }

    #[test]
    fn the_same_prefix_on_different_hosts_is_not_a_clash() {
        let site = site(
            "[[app]]\nname = \"a\"\ncomponent = \"sample:hello\"\nhosts = \"a.test\"\n[[app]]\nname = \"b\"\ncomponent = \"sample:hello\"\nhosts = \"b.test\"",
        );
        assert!(site.is_ok());
    }
}
