//! Configuration: the TOML file, `$WASMCORN_CMD_ARGS`, their precedence, `--print-config` and
//! `--check-config`, and one-line errors naming the key.

use std::os::unix::ffi::OsStrExt;
use std::process::Output;

use crate::support::{Server, assert_one_line_error, command};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = command(args);
    command.env_remove("WASMCORN_CMD_ARGS").envs(env.iter().copied());
    command.output().expect("run wasmcorn")
}

fn printed(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasmcorn.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

#[test]
fn command_line_beats_environment_beats_file_beats_defaults() {
    let (_dir, file) = config_file("workers = 3\ntimeout = 11\nmax_requests = 7\n");
    let env = [("WASMCORN_CMD_ARGS", "--workers 2 --timeout 12")];
    let all = printed(&run(&["serve", "--config", &file, "--print-config", "--workers", "1"], &env));
    assert!(all.contains("\nworkers = 1\n"), "{all}");
    assert!(all.contains("\ntimeout = 12\n"), "{all}");
    assert!(all.contains("\nmax-requests = 7\n"), "{all}");
    assert!(all.contains("\ngraceful-timeout = 30\n"), "a default: {all}");
    let no_cli = printed(&run(&["serve", "--config", &file, "--print-config"], &env));
    assert!(no_cli.contains("\nworkers = 2\n"), "{no_cli}");
    let file_only = printed(&run(&["serve", "--config", &file, "--print-config"], &[]));
    assert!(file_only.contains("\nworkers = 3\n") && file_only.contains("\ntimeout = 11\n"), "{file_only}");
}

/// TOML writes an octal umask as an integer (`umask = 0o022`): it is the mask itself, not the digits of one (it
/// was refused as `not "18"`).
#[test]
fn a_toml_octal_umask_is_the_mask() {
    let (_dir, file) = config_file("umask = 0o027\n");
    let text = printed(&run(&["serve", "--config", &file, "--print-config"], &[]));
    assert!(text.contains("\numask = \"0o27\"\n"), "{text}");
    // `--umask 022` was printed as `umask = 022`, which is not TOML: the printed file could not be read back.
    let text = printed(&run(&["serve", "--umask", "022", "--print-config"], &[]));
    assert!(text.contains("\numask = \"022\"\n"), "{text}");
    let (_again, printed_file) = config_file(&text);
    let again = printed(&run(&["serve", "--config", &printed_file, "--print-config"], &[]));
    assert_eq!(again, text);
}

#[test]
fn print_config_is_toml_the_file_format_accepts_back() {
    let (_dir, file) = config_file(
        "bind = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\nenv = [\"A=1\"]\napp = \"sample:echo\"\nreuse-port = true\n",
    );
    let text = printed(&run(&["serve", "--config", &file, "--print-config"], &[]));
    assert!(text.starts_with("app = \"sample:echo\"\n"), "{text}");
    assert!(text.contains("\nbind = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n"), "{text}");
    assert!(text.contains("\nenv = [\"A=1\"]\n") && text.contains("\nreuse-port = true\n"), "{text}");
    let (_again, printed_file) = config_file(&text);
    let again = printed(&run(&["serve", "--config", &printed_file, "--print-config"], &[]));
    assert_eq!(again, text);
}

#[test]
fn print_config_of_a_file_with_app_tables_reads_back_with_them() {
    let (dir, file) = config_file(
        "workers = 1\ndefault_app = \"www\"\n[[app]]\nname = \"www\"\ncomponent = \"sample:hello\"\n\
         [[app]]\nname = \"echo\"\ncomponent = \"sample:echo\"\nhosts = [\"echo.test\"]\n",
    );
    let text = printed(&run(&["serve", "--config", &file, "--print-config"], &[]));
    assert!(!text.contains("apps = "), "the apps are the file's own tables, not a manifest it names: {text}");
    assert!(text.contains("\ndefault_app = \"www\"\n") && text.matches("\n[[app]]\n").count() == 2, "{text}");
    let printed_file = dir.path().join("printed.toml");
    std::fs::write(&printed_file, &text).unwrap();
    let printed_file = printed_file.to_str().unwrap();
    let check = run(&["serve", "--config", printed_file, "--check-config"], &[]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let again = printed(&run(&["serve", "--config", printed_file, "--print-config"], &[]));
    assert_eq!(again, text);
    // An APP beside the tables is refused, as serving refuses it (printed, `app = ...` clashed with them).
    let output = run(&["serve", "--config", &file, "sample:echo", "--print-config"], &[]);
    assert_one_line_error(&output, &["APP cannot be used with --apps"]);
}

#[test]
fn config_file_settings_are_served() {
    let (_dir, file) =
        config_file("app = \"sample:echo\"\nbind = \"127.0.0.1:0\"\nworkers = 2\nenv = [\"COLOR=blue\"]\n");
    let mut command = command(&["serve", "-c", &file]);
    command.env_remove("WASMCORN_CMD_ARGS");
    let server = Server::spawn(command);
    server.wait_for_count("Booting worker with pid", 2);
    assert_eq!(server.get("/cfg").json()["environ"]["PATH_INFO"], "/cfg");
}

#[test]
fn unknown_keys_and_bad_values_are_one_line_errors_naming_the_key() {
    let (_dir, file) = config_file("wrokers = 3\n");
    assert_one_line_error(&run(&["serve", "--config", &file], &[]), &["wasmcorn.toml", "unknown key \"wrokers\""]);
    let (_dir, file) = config_file("workers = \"many\"\n");
    assert_one_line_error(&run(&["serve", "--config", &file], &[]), &["wasmcorn.toml", "many", "--workers"]);
    let (_dir, file) = config_file("workers = [\n");
    assert_one_line_error(&run(&["serve", "--config", &file], &[]), &["wasmcorn.toml", "invalid TOML"]);
    // Where, and what: the cause used to be cut off with the lines after the first.
    let (_dir, file) = config_file("workers = 2\nworkers = 3\n");
    assert_one_line_error(&run(&["serve", "--config", &file], &[]), &["line 2, column 1: duplicate key"]);
    let (_dir, file) = config_file("daemon = \"yes\"\n");
    assert_one_line_error(&run(&["serve", "--config", &file], &[]), &["\"daemon\"", "true or false"]);
    // Beside `apps` naming a manifest, it was read from nowhere, and no app was the default.
    let (_dir, file) = config_file("apps = \"apps.toml\"\ndefault_app = \"shop\"\n");
    assert_one_line_error(&run(&["serve", "--config", &file, "--check-config"], &[]), &["\"default_app\" goes with"]);
    let (_dir, file) = config_file("config = \"other.toml\"\n");
    assert_one_line_error(&run(&["serve", "--config", &file], &[]), &["\"config\"", "command line"]);
    assert_one_line_error(&run(&["serve", "--config", "/nonexistent.toml"], &[]), &["/nonexistent.toml"]);
    assert_one_line_error(&run(&["serve"], &[("WASMCORN_CMD_ARGS", "--workers zero")]), &["WASMCORN_CMD_ARGS", "zero"]);
    assert_one_line_error(&run(&["serve", "--log-level", "loud"], &[]), &["--log-level", "loud"]);
    assert_one_line_error(&run(&["serve", "--umask", "999"], &[]), &["--umask"]);
    // An empty name, or a folder, where a file is wanted: one line at --check-config, not a failure at the start.
    assert_one_line_error(&run(&["serve", "", "--check-config"], &[]), &["the app is an empty name"]);
    for flag in ["--error-logfile", "--access-logfile"] {
        assert_one_line_error(&run(&["serve", flag, "", "--check-config"], &[]), &[flag, "not an empty name"]);
    }
    assert_one_line_error(&run(&["serve", "--pid", "/tmp", "--check-config"], &[]), &["--pid", "names a folder"]);
    // An empty mask was taken for 0, and an empty list for the default (`bind = []` served on 127.0.0.1:8000).
    for empty in ["", "0o"] {
        assert_one_line_error(&run(&["serve", "--umask", empty, "--check-config"], &[]), &["--umask"]);
    }
    let (_dir, file) = config_file(
        "bind = []
",
    );
    assert_one_line_error(&run(&["serve", "--config", &file, "--check-config"], &[]), &["\"bind\" is an empty list"]);
    let not_utf8 = std::ffi::OsStr::from_bytes(b"--workers \xff");
    let output = command(&["serve", "--check-config"]).env("WASMCORN_CMD_ARGS", not_utf8).output().unwrap();
    assert_one_line_error(&output, &["WASMCORN_CMD_ARGS is not UTF-8"]);
    assert_one_line_error(&run(&["serve", "--user", "no-such-user-here"], &[]), &["--user", "no-such-user-here"]);
    assert_one_line_error(&run(&["serve", "--access-logformat", "%(zz)s"], &[]), &["--access-logformat", "%(zz)s"]);
}

/// A time setting is at most a year, wherever it is given: longer ones made the float conversion panic or the
/// clock arithmetic overflow (a worker dying on every connection, the arbiter on SIGTERM).
#[test]
fn time_settings_past_a_year_are_one_line_errors() {
    for (flag, value) in [
        ("--guest-timeout", "1e300"),
        ("--client-timeout", "1e19"),
        ("--keep-alive", "1e300"),
        ("--keep-alive", "31536001"),
        ("--graceful-timeout", "18446744073709551615"),
        ("--timeout", "31536001"),
    ] {
        let output = run(&["serve", flag, value, "--check-config"], &[]);
        assert_one_line_error(&output, &[flag, value, "31536000 (a year)"]);
    }
    let (_dir, file) = config_file("keep-alive = 1e300\n");
    assert_one_line_error(&run(&["serve", "--config", &file, "--check-config"], &[]), &["--keep-alive", "1e300"]);
    let year = run(&["serve", "--keep-alive", "31536000", "--graceful-timeout", "31536000", "--check-config"], &[]);
    assert!(year.status.success(), "a year is allowed: {}", String::from_utf8_lossy(&year.stderr));
}

#[test]
fn check_config_validates_the_app_and_exits() {
    let (_dir, file) = config_file("app = \"sample:echo\"\nworkers = 4\n");
    let ok = run(&["serve", "--config", &file, "--check-config"], &[]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(!String::from_utf8_lossy(&ok.stderr).contains("Listening"), "nothing is served");
    // Addresses `serve` could not bind fail the check, not only the start.
    assert_one_line_error(&run(&["serve", "--check-config", "-b", "bogus:::"], &[]), &["bogus:::", "HOST:PORT"]);
    assert_one_line_error(
        &run(&["serve", "--check-config", "--metrics-bind", "127.0.0.1:port"], &[]),
        &["--metrics-bind 127.0.0.1:port", "HOST:PORT"],
    );
    assert_one_line_error(&run(&["serve", "--check-config", "-b", "fd://x"], &[]), &["fd://NUMBER"]);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"junk").unwrap();
    assert_one_line_error(
        &run(&["serve", bad.to_str().unwrap(), "--check-config"], &[]),
        &["bad.wasm", "not a WebAssembly component"],
    );
}

/// A config file or app manifest that is a FIFO, a folder or a device is refused before it is read: a FIFO was
/// waited on for ever (at a start, or in the arbiter at a reload), /dev/zero read until memory ran out.
#[test]
fn a_config_file_or_manifest_that_is_not_a_regular_file_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let fifo = fifo.to_str().unwrap();
    let folder = dir.path().to_str().unwrap();
    for (flag, path, what) in [
        ("--config", fifo, "cannot read the config file"),
        ("--config", "/dev/zero", "cannot read the config file"),
        ("--apps", fifo, "cannot read the app manifest"),
        ("--apps", folder, "cannot read the app manifest"),
    ] {
        let stderr = Server::refused_start(&["serve", "--check-config", flag, path]);
        assert!(stderr.contains(what), "{flag} {path}: {stderr}");
        assert!(stderr.contains("not a regular file") || stderr.contains("directory"), "{flag} {path}: {stderr}");
    }
}

/// A config file or app manifest past 4 MiB is refused before it is read, at a start or a reload (see tenants.rs):
/// the arbiter read any regular file whole. This one is valid TOML, a comment after its settings.
#[test]
fn a_config_file_or_manifest_past_4_mib_is_one_line() {
    let (_dir, file) = config_file(&format!("workers = 2\n#{}\n", "x".repeat(4 << 20)));
    let size = std::fs::metadata(&file).unwrap().len().to_string();
    let output = run(&["serve", "--check-config", "--config", &file, "sample:hello"], &[]);
    assert_one_line_error(&output, &["cannot read the config file", &size, "more than 4194304"]);
    let output = run(&["serve", "--check-config", "--apps", &file], &[]);
    assert_one_line_error(&output, &["cannot read the app manifest", &size, "more than 4194304"]);
    // At the limit, it is read (and the manifest then refused for what it holds, not for its size).
    let (_dir, file) = config_file(&format!("workers = 2\n#{}\n", "x".repeat((4 << 20) - 14)));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 4 << 20);
    printed(&run(&["serve", "--check-config", "--config", &file, "sample:hello"], &[]));
}
