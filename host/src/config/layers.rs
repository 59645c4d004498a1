//! The configuration layers, merged as Gunicorn does: command line > `$WASMCORN_CMD_ARGS` > config file >
//! defaults. Each layer is turned into `serve` arguments and parsed by the same clap definition, so every flag
//! is valid in every layer under the same name, and a bad value is clap's one-line error naming the flag.
//! For each flag, the highest layer that sets it wins (a list, like `--bind`, is taken whole from that layer).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::cli::{Cli, ServeArgs};

/// The environment variable holding extra command-line arguments, as Gunicorn's `GUNICORN_CMD_ARGS`.
pub(super) const CMD_ARGS_VAR: &str = "WASMCORN_CMD_ARGS";

/// Flags that make sense only on the command line.
const COMMAND_LINE_ONLY: &[&str] = &["config", "check_config", "print_config"];

/// The `serve` subcommand's clap definition.
pub(super) fn serve_command() -> Command {
    Cli::command().find_subcommand("serve").cloned().unwrap_or_else(|| Command::new("serve")).no_binary_name(true)
}

/// Merges the layers for `serve` given the arguments that followed `serve` on the command line. Returns the
/// settings and the one argument list they were parsed from.
pub(super) fn resolve(command_line: &[OsString]) -> anyhow::Result<(ServeArgs, Vec<OsString>)> {
    let command = serve_command();
    let cli = parse(&command, command_line).map_err(|err| anyhow::anyhow!("{}", one_line(&err)))?;
    let env_args = match std::env::var(CMD_ARGS_VAR) {
        Ok(text) => shlex::split(&text)
            .with_context(|| format!("${CMD_ARGS_VAR} is not valid shell syntax: {text:?}"))?
            .into_iter()
            .map(OsString::from)
            .collect(),
        Err(std::env::VarError::NotPresent) => Vec::new(),
        Err(std::env::VarError::NotUnicode(_)) => bail!("${CMD_ARGS_VAR} is not UTF-8 text"),
    };
    let env = parse(&command, &env_args).map_err(|err| anyhow::anyhow!("in ${CMD_ARGS_VAR}: {}", one_line(&err)))?;
    for id in COMMAND_LINE_ONLY.iter().filter(|id| **id != "config") {
        if explicit(&env, id).is_some() {
            bail!("in ${CMD_ARGS_VAR}: {} belongs on the command line", flag_name(&command, id));
        }
    }
    let config_file =
        explicit(&cli, "config").or_else(|| explicit(&env, "config")).and_then(|values| values.into_iter().next());
    let file = match &config_file {
        Some(path) => {
            let path = PathBuf::from(path);
            let args = file_args(&command, &path)?;
            parse(&command, &args).map_err(|err| anyhow::anyhow!("{}: {}", path.display(), one_line(&err)))?
        }
        None => parse(&command, &[]).map_err(|err| anyhow::anyhow!("{}", one_line(&err)))?,
    };
    let merged = merge(&command, &[&cli, &env, &file]);
    let matches = parse(&command, &merged).map_err(|err| anyhow::anyhow!("{}", one_line(&err)))?;
    let args = ServeArgs::from_arg_matches(&matches).map_err(|err| anyhow::anyhow!("{}", one_line(&err)))?;
    Ok((args, merged))
}

fn parse(command: &Command, args: &[OsString]) -> Result<ArgMatches, clap::Error> {
    command.clone().try_get_matches_from(args)
}

/// The raw values a layer set explicitly for `id`, if it did.
fn explicit(matches: &ArgMatches, id: &str) -> Option<Vec<OsString>> {
    if matches.value_source(id) != Some(ValueSource::CommandLine) {
        return None;
    }
    Some(matches.get_raw(id).map(|values| values.map(OsStr::to_os_string).collect()).unwrap_or_default())
}

/// One argument list holding, for each flag, the values of the highest layer that set it.
fn merge(command: &Command, layers: &[&ArgMatches]) -> Vec<OsString> {
    let mut options = Vec::new();
    let mut positionals = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(values) = layers.iter().find_map(|layer| explicit(layer, id)) else { continue };
        match arg.get_long() {
            None => positionals.extend(values),
            Some(long) if arg.get_action().takes_values() => {
                for value in values {
                    let mut option = OsString::from(format!("--{long}="));
                    option.push(value);
                    options.push(option);
                }
            }
            Some(long) => options.push(OsString::from(format!("--{long}"))),
        }
    }
    if !positionals.is_empty() {
        options.push(OsString::from("--"));
        options.extend(positionals);
    }
    options
}

/// Turns a TOML config file into `serve` arguments. Unknown keys are errors naming the key.
fn file_args(command: &Command, path: &Path) -> anyhow::Result<Vec<OsString>> {
    let where_ = path.display();
    let text = super::read_settings_file(path).with_context(|| format!("cannot read the config file {where_}"))?;
    let table: toml::Table =
        text.parse().map_err(|err: toml::de::Error| anyhow::anyhow!("{where_}: invalid TOML: {}", toml_error(&err)))?;
    let mut options = Vec::new();
    let mut positionals = Vec::new();
    let holds_apps = table.get("app").and_then(toml::Value::as_array).is_some_and(|items| !items.is_empty());
    for (key, value) in &table {
        // `[[app]]` tables (and `default_app`) make the file an app manifest as well: see `manifest`. Without
        // them, `default_app` would be read from nowhere (a manifest named by `apps` has its own).
        if key == "default_app" {
            if !holds_apps {
                bail!("{where_}: key \"default_app\" goes with the [[app]] tables it names (here, or in the manifest)");
            }
            continue;
        }
        if key == "app" && value.as_array().is_some_and(|items| items.iter().all(toml::Value::is_table)) {
            let mut option = OsString::from("--apps=");
            option.push(path.as_os_str());
            options.push(option);
            continue;
        }
        let Some(arg) = find_arg(command, key) else {
            bail!("{where_}: unknown key {key:?}");
        };
        if COMMAND_LINE_ONLY.contains(&arg.get_id().as_str()) {
            bail!("{where_}: key {key:?} belongs on the command line");
        }
        if value.as_array().is_some_and(Vec::is_empty) {
            // Dropped silently, it left the default in force (`bind = []` served on 127.0.0.1:8000).
            bail!("{where_}: key {key:?} is an empty list");
        }
        let values = match value {
            // TOML writes octal integers (`umask = 0o022`), which are the mask itself; the flag takes octal text.
            toml::Value::Integer(0) if arg.get_id() == "umask" => vec!["0".to_string()],
            toml::Value::Integer(mask) if arg.get_id() == "umask" && *mask > 0 => vec![format!("0o{mask:o}")],
            _ => scalars(value).with_context(|| format!("{where_}: key {key:?}"))?,
        };
        match arg.get_long() {
            None => positionals.extend(values.into_iter().map(OsString::from)),
            Some(long) if arg.get_action().takes_values() => {
                options.extend(values.into_iter().map(|value| OsString::from(format!("--{long}={value}"))));
            }
            Some(long) => match value {
                toml::Value::Boolean(true) => options.push(OsString::from(format!("--{long}"))),
                toml::Value::Boolean(false) => {}
                _ => bail!("{where_}: key {key:?} takes true or false"),
            },
        }
    }
    if !positionals.is_empty() {
        options.push(OsString::from("--"));
        options.extend(positionals);
    }
    Ok(options)
}

/// The flag a config key names: its long name, with `_` and `-` interchangeable; `app` is the positional APP.
fn find_arg<'a>(command: &'a Command, key: &str) -> Option<&'a Arg> {
    let dashed = key.replace('_', "-");
    command.get_arguments().find(|arg| match arg.get_long() {
        Some(long) => long == key || long.replace('_', "-") == dashed,
        None => arg.get_id().as_str() == key,
    })
}

fn scalars(value: &toml::Value) -> anyhow::Result<Vec<String>> {
    match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

fn scalar(value: &toml::Value) -> anyhow::Result<String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(number) => Ok(number.to_string()),
        toml::Value::Float(number) => Ok(number.to_string()),
        toml::Value::Boolean(flag) => Ok(flag.to_string()),
        toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => {
            bail!("expected a string, number or boolean (or a list of them)")
        }
    }
}

/// The `--long` name of a flag, for messages.
fn flag_name(command: &Command, id: &str) -> String {
    command
        .get_arguments()
        .find(|arg| arg.get_id() == id)
        .and_then(Arg::get_long)
        .map_or(id.to_string(), |long| format!("--{long}"))
}

/// A TOML parse error in one line: where (its first line) and what (toml's message), which its display puts on
/// separate lines around a picture of the line.
pub(crate) fn toml_error(err: &toml::de::Error) -> String {
    format!("{}: {}", one_line(err), err.message().trim())
}

/// The first line of an error, without clap's `error: ` prefix.
pub(crate) fn one_line(err: &dyn std::fmt::Display) -> String {
    let text = err.to_string();
    let first = text.lines().find(|line| !line.trim().is_empty()).unwrap_or("invalid configuration");
    first.trim_start_matches("error: ").trim().to_string()
}

/// The resolved settings as TOML, one `key = value` line per flag, for `--print-config`. Apps listed in the
/// config file itself (`[[app]]` tables) follow as those tables: a line `apps = "FILE"` would name a file that is a
/// config file, not a manifest, to whoever reads the output back.
pub(super) fn render(args: &[OsString]) -> anyhow::Result<String> {
    let command = serve_command();
    let matches = parse(&command, args).map_err(|err| anyhow::anyhow!("{}", one_line(&err)))?;
    let first = |id: &str| matches.get_raw(id).and_then(|mut values| values.next()).map(PathBuf::from);
    let apps_in_config = first("config").filter(|config| first("apps").as_ref() == Some(config));
    // As serving says: and the printed `app = ...` would clash with the `[[app]]` tables in TOML.
    if apps_in_config.is_some() && first("app").is_some() {
        bail!("APP cannot be used with --apps: each app in the manifest has its own");
    }
    let mut lines = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if COMMAND_LINE_ONLY.contains(&id) || arg.is_hide_set() || id == "help" {
            continue;
        }
        if id == "apps" && apps_in_config.is_some() {
            continue;
        }
        let key = arg.get_long().unwrap_or(id);
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|values| values.map(|value| value.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let rendered: Vec<String> = values.iter().map(|value| toml_value(value)).collect();
        let line =
            match (arg.get_num_args().is_some_and(|range| range.max_values() > 1) || is_list(arg), rendered.len()) {
                (_, 0) if arg.get_action().takes_values() => continue,
                (_, 0) => format!("{key} = false"),
                (true, _) => format!("{key} = [{}]", rendered.join(", ")),
                (false, _) => format!("{key} = {}", rendered[0]),
            };
        lines.push(line);
    }
    if let Some(config) = apps_in_config {
        lines.push(String::new());
        lines.push(app_tables(&config)?);
    }
    Ok(lines.join("\n") + "\n")
}

/// The `default_app` key and the `[[app]]` tables of the config file at `path`, as TOML.
fn app_tables(path: &Path) -> anyhow::Result<String> {
    let where_ = path.display();
    let text = super::read_settings_file(path).with_context(|| format!("cannot read the config file {where_}"))?;
    let table: toml::Table =
        text.parse().map_err(|err: toml::de::Error| anyhow::anyhow!("{where_}: invalid TOML: {}", toml_error(&err)))?;
    let apps: toml::Table =
        table.into_iter().filter(|(key, _)| matches!(key.as_str(), "app" | "default_app")).collect();
    Ok(toml::to_string(&apps)?.trim_end().to_string())
}

fn is_list(arg: &Arg) -> bool {
    matches!(arg.get_action(), clap::ArgAction::Append)
}

fn toml_value(raw: &str) -> String {
    if raw == "true"
        || raw == "false"
        // Only as TOML would write it: `022` (a umask) is not a TOML integer, and printed bare it made a file the
        // config layer could not read back.
        || raw.parse::<i64>().is_ok_and(|number| number.to_string() == raw)
        || (raw.parse::<f64>().is_ok() && raw.contains('.'))
    {
        raw.to_string()
    } else {
        toml::Value::String(raw.to_string()).to_string()
    }
}
