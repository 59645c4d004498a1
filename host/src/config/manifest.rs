//! The app manifest (`--apps FILE`, or `[[app]]` tables in the config file): every hosted app with its
//! component, routes, environment, grants, limits and pool. Relative paths resolve against the manifest's
//! folder. Every mistake is one line naming the file, the app and the key: unknown keys, wrong types, duplicate
//! names, two apps with the same route, a component that is not there.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::accounts::{parse_group, parse_user};
use super::grants;
use super::layers::toml_error;
use super::seconds::{self, Zero};
use crate::guest::{AppSource, Capabilities, Guest, Limits};
use crate::routing::{AppId, HostPattern, Route, Router, normalise_prefix};
use crate::site::{App, DedicatedPool, Site};

/// One `[[app]]` table as written (`-` may stand for `_` in a key). The values are checked and resolved by
/// `hosted_app`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppTable {
    name: String,
    component: String,
    #[serde(default)]
    hosts: OneOrMany,
    prefix: Option<String>,
    env: Option<toml::Table>,
    #[serde(default)]
    dirs: OneOrMany,
    #[serde(default, alias = "allow-net")]
    allow_net: OneOrMany,
    #[serde(default, alias = "allow-http")]
    allow_http: OneOrMany,
    #[serde(alias = "guest-timeout")]
    guest_timeout: Option<f64>,
    #[serde(alias = "max-memory")]
    max_memory: Option<u64>,
    #[serde(alias = "instance-reuse")]
    instance_reuse: Option<u64>,
    #[serde(alias = "limit-request-body")]
    limit_request_body: Option<u64>,
    #[serde(alias = "max-requests")]
    max_requests: Option<u64>,
    workers: Option<u64>,
    user: Option<String>,
    group: Option<String>,
}

/// A string or a list of strings.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(text) => vec![text],
            OneOrMany::Many(texts) => texts,
        }
    }
}

/// What a key of an `[[app]]` table must hold, for the error that names it.
fn expected(key: &str) -> &'static str {
    match key {
        "hosts" | "dirs" | "allow_net" | "allow-net" | "allow_http" | "allow-http" => "a string or a list of strings",
        "env" => "a table of strings",
        "guest_timeout" | "guest-timeout" => "a number",
        "instance_reuse" | "instance-reuse" => "a whole number, 1 or more",
        "max_memory" | "max-memory" | "limit_request_body" | "limit-request-body" | "max_requests" | "max-requests"
        | "workers" => "a whole number, 0 or more",
        _ => "a string",
    }
}

/// Reads one `[[app]]` table, turning serde's errors into the manifest's own: `unknown key "K"`, `key "K" is
/// missing`, `key "K" must be ...`.
fn app_table(entry: &toml::Table) -> anyhow::Result<AppTable> {
    serde_path_to_error::deserialize(toml::Value::Table(entry.clone())).map_err(|err| {
        let key = err.path().iter().next().map(ToString::to_string).unwrap_or_default();
        let message = err.inner().to_string();
        let quoted = |message: &str| message.split('`').nth(1).unwrap_or_default().to_string();
        if message.starts_with("unknown field") {
            anyhow::anyhow!("unknown key {:?}", quoted(&message))
        } else if message.starts_with("missing field") {
            anyhow::anyhow!("key {:?} is missing", quoted(&message))
        } else if message.starts_with("duplicate field") {
            anyhow::anyhow!("key {:?} is given twice", quoted(&message))
        } else {
            anyhow::anyhow!("key {key:?} must be {}", expected(&key))
        }
    })
}

/// What an app gets for the settings its table leaves out: the server's own flags.
#[derive(Debug, Clone, Copy)]
pub(super) struct Defaults {
    pub guest_timeout: Duration,
    pub max_memory_bytes: usize,
    pub instance_reuse: u32,
    pub body_limit: Option<u64>,
}

/// Reads the manifest at `path`. In a config file (`in_config`), keys other than `app` and `default_app` are
/// the server's flags and are left to the config layer.
pub(super) fn load(path: &Path, in_config: bool, defaults: &Defaults) -> anyhow::Result<Site> {
    let where_ = path.display();
    let text = super::read_settings_file(path).with_context(|| format!("cannot read the app manifest {where_}"))?;
    let table: toml::Table =
        text.parse().map_err(|err: toml::de::Error| anyhow::anyhow!("{where_}: invalid TOML: {}", toml_error(&err)))?;
    // Absolute: the components are read after `--chdir`, from the manifest's folder all the same.
    let absolute = std::path::absolute(path).with_context(|| format!("cannot make {where_} absolute"))?;
    let base = absolute.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
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
    let mut apps = Vec::new();
    let mut routes = Vec::new();
    // Each route taken so far, and the app that has it.
    let mut taken: BTreeMap<(HostPattern, String), AppId> = BTreeMap::new();
    for (position, entry) in entries.iter().enumerate() {
        let Some(entry) = entry.as_table() else { bail!("app #{}: must be a table", position + 1) };
        let label = match entry.get("name") {
            Some(toml::Value::String(name)) => format!("app {name:?}"),
            _ => format!("app #{}", position + 1),
        };
        let table = app_table(entry).context(label.clone())?;
        let name = table.name.clone();
        check_name(&name).context(label)?;
        let context = || format!("app {name:?}");
        if apps.iter().any(|app: &App| app.guest.name == name) {
            bail!("app {name:?}: key \"name\": another app has the same name");
        }
        let id = AppId(apps.len());
        let (app, app_routes) = hosted_app(table, base, defaults, id).with_context(context)?;
        for route in app_routes {
            match taken.entry((route.host.clone(), route.prefix.clone())) {
                Entry::Vacant(vacant) => {
                    vacant.insert(id);
                }
                // Hosts are compared as routed: `X.test` and `x.test.` are `x.test`.
                Entry::Occupied(existing) if *existing.get() == id => {
                    bail!("app {name:?}: key \"hosts\": the route {route} is listed twice");
                }
                Entry::Occupied(existing) => bail!(
                    "app {name:?}: keys \"hosts\"/\"prefix\": the route {route} is already app {:?}'s",
                    apps.get(existing.get().index()).map_or("?", |app: &App| app.guest.name.as_str())
                ),
            }
            routes.push(route);
        }
        apps.push(app);
    }
    let fallback = match table.get("default_app") {
        None => None,
        Some(toml::Value::String(name)) => match apps.iter().position(|app| &app.guest.name == name) {
            Some(index) => Some(AppId(index)),
            None => bail!("key \"default_app\": no app is named {name:?}"),
        },
        Some(_) => bail!("key \"default_app\" must be the name of an app"),
    };
    Ok(Site { apps, router: Router::new(routes, fallback), hosted: true })
}

/// Names that mean something else where app names appear: the shared pool's metrics label, a request no app
/// took (its access-log and metrics label), the metrics label of the apps past the metrics table's room.
const RESERVED_NAMES: [&str; 3] = ["shared", "-", "_OTHER"];

/// A name that can appear in logs and process titles as is, and means nothing else there.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
    {
        bail!("key \"name\": {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'");
    }
    if RESERVED_NAMES.contains(&name) {
        bail!("key \"name\": {name:?} is reserved: the metrics or the access log use it for something else");
    }
    Ok(())
}

/// One `[[app]]` table: the app and its routes.
fn hosted_app(table: AppTable, base: &Path, defaults: &Defaults, id: AppId) -> anyhow::Result<(App, Vec<Route>)> {
    let source = match AppSource::parse(&table.component).context("key \"component\"")? {
        AppSource::File(path) => {
            let path = base.join(path);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => bail!("key \"component\": {} is not a regular file", path.display()),
                Err(_) => bail!("key \"component\": {} does not exist", path.display()),
            }
            AppSource::File(path)
        }
        sample => sample,
    };
    let hosts = table
        .hosts
        .into_vec()
        .iter()
        .map(|host| HostPattern::parse(host).map_err(|err| anyhow::anyhow!("key \"hosts\": {err}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let prefix = match &table.prefix {
        Some(prefix) => normalise_prefix(prefix).map_err(|err| anyhow::anyhow!("key \"prefix\": {err}"))?,
        None => String::new(),
    };
    let hosts = if hosts.is_empty() { vec![HostPattern::Any] } else { hosts };
    let routes = hosts.into_iter().map(|host| Route { host, prefix: prefix.clone(), app: id }).collect();
    let env = table
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| match value {
            toml::Value::String(_) if key.is_empty() || key.contains(['=', '\0']) => {
                bail!("key \"env\": {key:?} is not a valid variable name")
            }
            toml::Value::String(text) if text.contains('\0') => {
                bail!("key \"env\": the value of {key:?} holds a NUL character")
            }
            toml::Value::String(text) => Ok((key, text)),
            _ => bail!("key \"env\": the value of {key:?} must be a string"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dirs = grants::dirs_under(&table.dirs.into_vec(), base).context("key \"dirs\"")?;
    let net = grants::net(&table.allow_net.into_vec()).context("key \"allow_net\"")?;
    let http = grants::http(&table.allow_http.into_vec()).context("key \"allow_http\"")?;
    let guest_timeout = match table.guest_timeout {
        Some(value) => seconds::fractional("key \"guest_timeout\"", value, Zero::Refused)?,
        None => defaults.guest_timeout,
    };
    let max_memory_bytes = match table.max_memory {
        Some(mib @ 1..=65536) => usize::try_from(mib)?.saturating_mul(1 << 20),
        Some(mib) => bail!("key \"max_memory\" must be from 1 to 65536 MiB, not {mib}"),
        None => defaults.max_memory_bytes,
    };
    let instance_reuse = match table.instance_reuse {
        Some(requests @ 1..=0xffff_ffff) => u32::try_from(requests)?,
        Some(requests) => bail!("key \"instance_reuse\" must be from 1 to 4294967295, not {requests}"),
        None => defaults.instance_reuse,
    };
    let body_limit = match table.limit_request_body {
        Some(0) => None,
        Some(bytes) => Some(bytes),
        None => defaults.body_limit,
    };
    let (user, group) = (table.user, table.group);
    let pool = match table.workers {
        Some(0) => bail!("key \"workers\" must be at least 1"),
        Some(workers) => {
            let user = user.as_deref().map(parse_user).transpose().context("key \"user\"")?;
            let group = group.as_deref().map(parse_group).transpose().context("key \"group\"")?;
            if let (Some(user), None) = (user, group) {
                crate::process::account_of(user).context("key \"user\"")?;
            }
            let workers = u32::try_from(workers).context("key \"workers\" is too large")?;
            Some(DedicatedPool { workers, user, group })
        }
        None if user.is_some() || group.is_some() => {
            bail!("keys \"user\"/\"group\" need \"workers\": only a dedicated pool runs under its own user")
        }
        None => None,
    };
    let guest = Guest {
        name: table.name,
        source,
        env,
        capabilities: Capabilities { dirs, net, http },
        limits: Limits { guest_timeout, max_memory_bytes, instance_reuse },
    };
    Ok((App { guest, body_limit, max_requests: table.max_requests.unwrap_or(0), pool }, routes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults {
        guest_timeout: Duration::from_secs(30),
        max_memory_bytes: 128 << 20,
        instance_reuse: 1,
        body_limit: None,
    };

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
            instance-reuse = 50
            [[app]]
            name = "evil"
            component = "sample:hello"
            hosts = "evil.test"
            workers = 2
            max_requests = 7
            "#,
        )
        .unwrap();
        assert_eq!(site.apps.len(), 3);
        assert_eq!(site.apps[0].guest.env, vec![("GREETING".to_string(), "hi".to_string())]);
        assert_eq!(site.apps[1].guest.limits.guest_timeout, Duration::from_millis(1500));
        assert_eq!(site.apps[1].guest.limits.max_memory_bytes, 16 << 20);
        assert_eq!(site.apps[1].body_limit, Some(10));
        assert_eq!(site.apps[1].guest.limits.instance_reuse, 50);
        assert_eq!(site.apps[0].guest.limits.instance_reuse, 1);
        assert_eq!(site.apps[2].pool.map(|pool| pool.workers), Some(2));
        assert_eq!(site.apps[2].max_requests, 7);
        assert_eq!(site.apps[0].guest.limits.guest_timeout, Duration::from_secs(30));
        let route = |host: &str, path: &str| {
            site.router.route(Some(host), path).map(|routed| (routed.app.index(), routed.script_name))
        };
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
        // The same host twice in one app, however it is spelled: one line (it was an index out of bounds).
        for hosts in [
            "\"x.test\", \"x.test\"",
            "\"x.test\", \"X.TEST\"",
            "\"x.test\", \"x.test.\"",
            "\"*.a.test\", \"*.A.test\"",
        ] {
            let listed = error(&format!("{app}hosts = [{hosts}]"));
            assert!(
                listed.contains("app \"a\": key \"hosts\": the route ") && listed.contains(" is listed twice"),
                "{listed}"
            );
        }
        let second = error(&format!("{app}[[app]]\nname = \"b\"\ncomponent = \"sample:echo\"\nhosts = [\"b\", \"B\"]"));
        assert!(second.contains("app \"b\": key \"hosts\": the route b/ is listed twice"), "{second}");
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
        assert!(error(&format!("{app}instance_reuse = 0")).contains("key \"instance_reuse\" must be from 1"));
        assert!(
            error(&format!("{app}instance_reuse = \"x\"")).contains("key \"instance_reuse\" must be a whole number")
        );
        assert!(error(&format!("{app}hosts = [\"a b\"]")).contains("app \"a\": key \"hosts\""));
        assert!(
            error(&format!("{app}env = {{ A = 1 }}"))
                .contains("app \"a\": key \"env\": the value of \"A\" must be a string")
        );
        assert!(error(&format!("{app}user = \"root\"")).contains("need \"workers\""));
        assert!(error(&format!("default_app = \"z\"\n{app}")).contains("key \"default_app\": no app is named \"z\""));
        assert!(error("workers = 3").contains("unknown key \"workers\""));
        assert!(error("[[app]]\nname = 1").contains("app #1: key \"name\" must be a string"));
        assert!(
            error(&format!("{app}max-memory = \"x\"")).contains("app \"a\": key \"max-memory\" must be a whole number")
        );
        assert!(
            error(&format!("{app}max_requests = -1"))
                .contains("key \"max_requests\" must be a whole number, 0 or more")
        );
        assert!(error(&format!("{app}hosts = 1")).contains("key \"hosts\" must be a string or a list of strings"));
        assert!(error(&format!("{app}guest_timeout = \"x\"")).contains("key \"guest_timeout\" must be a number"));
        assert!(error(&format!("{app}env = 1")).contains("key \"env\" must be a table of strings"));
        assert!(error(&format!("{app}guest_timeout = 1\nguest-timeout = 2")).contains("is given twice"));
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
