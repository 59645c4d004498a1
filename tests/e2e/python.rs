//! Python WSGI apps in the sandbox: apps under tests/python/ are built with `wasmcorn build python` (see
//! support::python) and served like any component. The plain and Flask apps run inside `wsgiref.validate`
//! (its warnings made errors), so a request that breaks PEP 3333 on either side fails with a traceback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::support::postgres::Postgres;
use crate::support::python::{build, built};
use crate::support::{PATIENCE, Server};

const TEN_MIB: usize = 10 << 20;

fn plain_app() -> String {
    built("plain", &["plain_app:application", "--warmup", "/"])
}

fn flask_app() -> String {
    let requirements = crate::support::python::app_dir("flask").join("requirements.txt");
    let requirements = requirements.to_str().expect("a UTF-8 path");
    built("flask", &["flask_app:validated", "--requirements", requirements, "--warmup", "/"])
}

/// 10 MiB that are not all alike, and their SHA-256.
fn big_body() -> (Vec<u8>, String) {
    let body: Vec<u8> = (0..TEN_MIB).map(|index| (index % 251) as u8 ^ (index >> 16) as u8).collect();
    let digest = Sha256::digest(&body).iter().map(|byte| format!("{byte:02x}")).collect();
    (body, digest)
}

/// What the test apps' `/stream?mib=N` sends: bytes 0..=255 over and over.
fn pattern(length: usize) -> Vec<u8> {
    (0..length).map(|index| index as u8).collect()
}

/// `POST path` with the body sent in 256 KiB chunks of chunked transfer coding.
fn post_chunked(server: &Server, path: &str, body: &[u8]) -> crate::support::Response {
    let mut bytes =
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for chunk in body.chunks(256 * 1024) {
        bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        bytes.extend_from_slice(chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    server.request(&bytes)
}

fn post(server: &Server, path: &str, content_type: &str, body: &[u8]) -> crate::support::Response {
    let mut bytes = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    server.request(&bytes)
}

fn assert_no_traceback(server: &Server) {
    let log = server.log_text();
    assert!(!log.contains("Traceback") && !log.contains("Error handling request"), "the app failed:\n{log}");
}

#[test]
fn plain_wsgi_app_answers_routes_and_query_strings() {
    let server = Server::start(&plain_app(), 1, &[]);
    let hello = server.get("/");
    assert_eq!((hello.status, hello.text().as_str()), (200, "hello from plain WSGI"));
    assert_eq!(hello.header("content-type"), Some("text/plain"));
    let query = server.get("/query?a=1&b=two%20words&a=3");
    assert_eq!(query.status, 200);
    assert_eq!(query.json(), serde_json::json!({"a": ["1", "3"], "b": ["two words"]}));
    assert_eq!(server.get("/missing").status, 404);
    let written = server.get("/write");
    assert_eq!((written.status, written.text().as_str()), (200, "written, then returned"));
    let replaced = server.get("/exc-info");
    assert_eq!((replaced.status, replaced.text().as_str()), (503, "replaced"), "exc_info replaced the headers");
    assert_no_traceback(&server);
}

#[test]
fn plain_wsgi_app_gets_every_wsgi_key_and_its_streams() {
    let server = Server::start(&plain_app(), 1, &[]);
    let response = server.request(b"GET /environ?x=1 HTTP/1.1\r\nHost: example.org:8080\r\nX-Custom: yes\r\n\r\n");
    assert_eq!(response.status, 200, "{}", server.log_text());
    let environ = response.json();
    assert_eq!(environ["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(environ["wsgi.url_scheme"], "http");
    assert_eq!(environ["wsgi.multithread"], false);
    assert_eq!(environ["wsgi.multiprocess"], true);
    assert_eq!(environ["wsgi.run_once"], false);
    assert!(environ["wsgi.input"].is_string() && environ["wsgi.errors"].is_string(), "{environ}");
    assert_eq!(environ["REQUEST_METHOD"], "GET");
    assert_eq!(environ["PATH_INFO"], "/environ");
    assert_eq!(environ["QUERY_STRING"], "x=1");
    assert_eq!(environ["SERVER_NAME"], "example.org");
    assert_eq!(environ["SERVER_PORT"], "8080");
    assert_eq!(environ["HTTP_X_CUSTOM"], "yes");
    assert!(environ.get("CONTENT_LENGTH").is_none(), "no body, no CONTENT_LENGTH: {environ}");
    let lines = post(&server, "/lines", "text/plain", b"first\nsecond\nthird");
    assert_eq!(lines.json(), serde_json::json!({"first": "first\n", "rest": ["second\n", "third"]}));
    assert_eq!(server.get("/errors").status, 200);
    server.wait_for_line("plain_app: hello on wsgi.errors");
    assert_eq!(server.get("/closing").text(), "closing");
    server.wait_for_line("plain_app: the iterable was closed");
    assert_no_traceback(&server);
}

#[test]
fn plain_wsgi_app_streams_10_mib_in_and_out() {
    let server = Server::start(&plain_app(), 1, &[]);
    let (body, digest) = big_body();
    let expected = serde_json::json!({"length": TEN_MIB, "sha256": digest});
    let sized = post(&server, "/upload", "application/octet-stream", &body);
    assert_eq!((sized.status, sized.json()), (200, expected.clone()));
    let chunked = post_chunked(&server, "/upload", &body);
    assert_eq!((chunked.status, chunked.json()), (200, expected));
    let streamed = server.get("/stream?mib=10");
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("transfer-encoding"), Some("chunked"), "a long body is streamed");
    assert!(streamed.body == pattern(TEN_MIB), "the streamed body is the app's ({} bytes)", streamed.body.len());
    assert_no_traceback(&server);
}

#[test]
fn python_exception_is_a_500_with_its_traceback_and_the_worker_stays() {
    let server = Server::start(&plain_app(), 1, &[]);
    let workers = server.live_workers();
    let failed = server.get("/boom");
    assert_eq!(failed.status, 500);
    server.wait_for_line("Traceback (most recent call last):");
    server.wait_for_line("ZeroDivisionError");
    assert!(!failed.text().contains("ZeroDivisionError"), "the traceback is for the log, not the client");
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.live_workers(), workers, "the same worker goes on serving");
}

#[test]
fn exception_after_the_response_started_cuts_the_connection() {
    let server = Server::start(&plain_app(), 1, &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("set a read timeout");
    stream.write_all(b"GET /boom-late HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "the head went out: {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(200)])
    );
    assert!(!raw.ends_with(b"0\r\n\r\n"), "the chunked body must not end as if complete");
    server.wait_for_line("RuntimeError: failed after the response started");
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn env_flags_are_visible_through_os_environ_and_each_request_gets_a_fresh_interpreter() {
    let server = Server::start(&plain_app(), 1, &["--env", "GREETING=hello there"]);
    assert_eq!(server.get("/env?name=GREETING").text(), "hello there");
    assert_eq!(server.get("/env?name=HOME").text(), "<unset>", "nothing of the server's environment");
    assert_eq!(server.get("/counter").text(), "1");
    assert_eq!(server.get("/counter").text(), "1", "module state does not survive a request by default");
}

#[test]
fn flask_app_answers_routes_json_and_query_strings() {
    let server = Server::start(&flask_app(), 1, &["--env", "GREETING=hi"]);
    let hello = server.get("/");
    assert_eq!((hello.status, hello.text().as_str()), (200, "hello from Flask"), "{}", server.log_text());
    let item = server.get("/items/7?q=x%20y&tag=a&tag=b");
    assert_eq!(item.json(), serde_json::json!({"id": 7, "q": "x y", "tags": ["a", "b"]}));
    let echoed = post(&server, "/json", "application/json", br#"{"name": "wasmcorn", "n": [1, 2]}"#);
    assert_eq!(echoed.json(), serde_json::json!({"received": {"name": "wasmcorn", "n": [1, 2]}}));
    assert_eq!(server.get("/items/nope").status, 404);
    assert_eq!(server.get("/env/GREETING").text(), "hi");
    assert_no_traceback(&server);
}

#[test]
fn flask_app_streams_10_mib_in_and_out() {
    let server = Server::start(&flask_app(), 1, &[]);
    let (body, digest) = big_body();
    let uploaded = post_chunked(&server, "/upload", &body);
    assert_eq!(uploaded.status, 200, "{}", server.log_text());
    assert_eq!(uploaded.json(), serde_json::json!({"length": TEN_MIB, "sha256": digest}));
    let streamed = server.get("/stream?mib=10");
    assert_eq!(streamed.status, 200);
    assert!(streamed.body == pattern(TEN_MIB), "the streamed body is the app's ({} bytes)", streamed.body.len());
    assert_no_traceback(&server);
}

#[test]
fn flask_exception_is_a_500_with_its_traceback_and_the_worker_stays() {
    let server = Server::start(&flask_app(), 1, &[]);
    let workers = server.live_workers();
    assert_eq!(server.get("/boom").status, 500);
    server.wait_for_line("KeyError: 'no such thing'");
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.live_workers(), workers);
}

/// A failed build: a non-zero exit, and one line on stderr that says `what`.
fn assert_build_fails(args: &[&str], what: &str) {
    let output = build(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the build should fail: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.starts_with("Installing ")).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("Error: ") && lines[0].contains(what), "{stderr}");
}

#[test]
fn build_names_a_missing_module_or_callable() {
    let src = crate::support::python::app_dir("plain");
    let src = src.to_str().expect("a UTF-8 path");
    let out = tempfile::tempdir().expect("a temporary folder");
    let output = out.path().join("app.wasm");
    let output = output.to_str().expect("a UTF-8 path");
    assert_build_fails(&["no_such_module:app", "--src", src, "-o", output], "module 'no_such_module' not found");
    assert_build_fails(&["plain_app:no_such_callable", "--src", src, "-o", output], "no callable 'no_such_callable'");
    assert!(!out.path().join("app.wasm").exists(), "a failed build writes no component");
}

/// In a folder others may write, names planted before the build (`app.wasm.partial`, the old temporary, and
/// `app.wasm` itself, both symlinks to a file of the builder's) are never written through: the component lands as
/// a new file of ours and the linked file is untouched.
#[test]
fn build_writes_through_no_name_planted_beside_its_output() {
    use std::os::unix::fs::symlink;
    let src = crate::support::python::app_dir("plain");
    let shared = crate::support::shared_folder();
    let victim = tempfile::NamedTempFile::new().expect("a file of the builder's");
    std::fs::write(victim.path(), b"untouched").expect("write the file");
    let output = shared.path().join("app.wasm");
    for planted in ["app.wasm.partial", "app.wasm"] {
        symlink(victim.path(), shared.path().join(planted)).expect("plant a symlink");
    }
    let result = build(&["plain_app:application", "--src", src.to_str().unwrap(), "-o", output.to_str().unwrap()]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let linked = std::fs::read(victim.path()).expect("read the file");
    assert!(linked == b"untouched", "the linked file was written: {} bytes now", linked.len());
    let meta = std::fs::symlink_metadata(&output).expect("the component");
    assert!(meta.is_file(), "a new file, not the planted link: {meta:?}");
    let component = std::fs::read(&output).expect("read the component");
    assert!(component.starts_with(b"\0asm"), "a component");
    let left: Vec<String> = std::fs::read_dir(shared.path())
        .expect("list the folder")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "the component and the planted partial, nothing of the build's: {left:?}");
}

/// Modules planted in the folder the build runs from are never imported by the build's Python tools: with `-m` or
/// `-c`, Python puts the current folder first on its module path, so a planted `componentize_py.py` ran as the
/// builder (and the build failed). The plain app, built from such a folder.
#[test]
fn build_imports_nothing_from_the_folder_it_runs_from() {
    let planted = tempfile::tempdir().expect("a temporary folder");
    for module in ["componentize_py", "venv", "pip", "sitecustomize", "wasmcorn_wsgi"] {
        let marker = planted.path().join(format!("imported-{module}"));
        let code = format!("open({:?}, 'w').write('planted')\n", marker.to_str().expect("a UTF-8 path"));
        std::fs::write(planted.path().join(format!("{module}.py")), code).expect("plant a module");
    }
    let src = crate::support::python::app_dir("plain");
    let out = tempfile::tempdir().expect("a temporary folder");
    let output = out.path().join("app.wasm");
    let args = ["plain_app:application", "--src", src.to_str().unwrap(), "-o", output.to_str().unwrap()];
    let result = crate::support::python::build_from(planted.path(), &args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let imported: Vec<String> = std::fs::read_dir(planted.path())
        .expect("list the folder")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("imported-"))
        .collect();
    assert!(imported.is_empty(), "planted modules ran: {imported:?}");
}

/// The arguments that build `target` from tests/python/`app` with the requirements of tests/python/native (ujson,
/// a C extension) into `output`.
fn with_native_requirements(target: &str, app: &str, output: &Path) -> Vec<String> {
    let requirements = crate::support::python::app_dir("native").join("requirements.txt");
    let src = crate::support::python::app_dir(app);
    [target, "--src", &src.to_string_lossy(), "--requirements", &requirements.to_string_lossy()]
        .into_iter()
        .map(str::to_string)
        .chain(["-o".to_string(), output.to_string_lossy().into_owned()])
        .collect()
}

#[test]
fn build_refuses_a_requirement_with_a_c_extension() {
    let out = tempfile::tempdir().expect("a temporary folder");
    let args = with_native_requirements("native_app:application", "native", &out.path().join("app.wasm"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_build_fails(&args, "requirement 'ujson' needs the C extension 'ujson'");
}

#[test]
fn build_names_the_native_extensions_it_leaves_out_of_an_app_that_does_not_import_them() {
    let out = tempfile::tempdir().expect("a temporary folder");
    let args = with_native_requirements("plain_app:application", "plain", &out.path().join("app.wasm"));
    let result = build(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    let line = "Left out native extension modules, which cannot run in WebAssembly (an import of one fails): ujson";
    assert!(stderr.contains(line), "{stderr}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(out.path().join("app.wasm")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the component is owner-only");
}

/// A cache folder whose way passes through a folder other users may change (a team's group-writable folder, not
/// sticky; a user's own private group would be no one else's) is refused before anything is installed: such a user could swap the cache for a tree of theirs after
/// the build checked it, and have the build run their Python.
#[test]
fn build_refuses_a_cache_folder_in_a_folder_others_may_change() {
    use std::os::unix::fs::PermissionsExt;
    let src = crate::support::python::app_dir("plain");
    let team = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary folder");
    std::fs::set_permissions(team.path(), std::fs::Permissions::from_mode(0o2775)).expect("chmod 2775");
    // A group others are in (the tests run as root, which may give the folder to any group).
    let team_group = nix::unistd::Group::from_name("nogroup").expect("look the group up").expect("Debian's nogroup");
    nix::unistd::chown(team.path(), None, Some(team_group.gid)).expect("give the folder to the group");
    let cache = team.path().join("cache");
    let out = tempfile::tempdir().expect("a temporary folder");
    let output = out.path().join("app.wasm");
    let args = [
        "plain_app:application",
        "--src",
        src.to_str().expect("a UTF-8 path"),
        "-o",
        output.to_str().expect("a UTF-8 path"),
        "--cache-dir",
        cache.to_str().expect("a UTF-8 path"),
    ];
    let result = build(&args);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line, and no install: {stderr}");
    let named = format!("lies in {}, where other users may rename or replace folders", team.path().display());
    assert!(stderr.contains(&named), "{stderr}");
    assert!(!output.exists(), "no component was written");
}

#[test]
fn build_to_a_missing_folder_is_one_line_before_anything_is_installed() {
    let src = crate::support::python::app_dir("plain");
    let out = tempfile::tempdir().expect("a temporary folder");
    let missing = out.path().join("gone/app.wasm");
    let args = ["plain_app:application", "--src", src.to_str().expect("a UTF-8 path"), "-o", missing.to_str().unwrap()];
    let output = build(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line, and no install: {stderr}");
    assert!(stderr.contains("/gone/app.wasm: the folder ") && stderr.contains("/gone does not exist"), "{stderr}");
    // A folder, or a name that ends with a slash, is not a component's file name.
    let folder = out.path().to_str().unwrap().to_string();
    for output in [folder.clone(), format!("{folder}/"), format!("{folder}/new/")] {
        let args = ["plain_app:application", "--src", src.to_str().unwrap(), "-o", &output];
        let output = build(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(" is a folder: name the component file to write"), "{stderr}");
    }
    // Nor is a FIFO (or a device: `-o /dev/null` run by root replaced the null device), which is left as it is.
    let fifo = out.path().join("app.wasm");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let output = build(&["plain_app:application", "--src", src.to_str().unwrap(), "-o", fifo.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line, and no install: {stderr}");
    assert!(stderr.contains("app.wasm is a FIFO: name the component file to write (it is left as it is)"), "{stderr}");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO is still there");
}

#[test]
fn a_component_larger_than_max_memory_is_refused_naming_the_limit() {
    let app = plain_app();
    let output = crate::support::command(&["serve", &app, "--max-memory", "8", "--check-config"])
        .output()
        .expect("run wasmcorn serve --check-config");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("exceeds the limit of 0x800000 bytes") && stderr.contains("--max-memory"), "{stderr}");
    assert!(stderr.contains("needs more memory than it may have") && !stderr.contains("not a valid"), "{stderr}");
}

#[test]
fn defer_import_runs_module_code_with_the_servers_environment() {
    let app = built("deferred", &["deferred_app:application", "--defer-import", "--warmup", "/"]);
    let server = Server::start(&app, 1, &["--env", "GREETING=hello from --env"]);
    assert_eq!(server.get("/").text(), "hello from --env");
    assert_eq!(server.get("/").text(), "hello from --env", "every fresh instance runs the module code again");
}

/// A warm-up path reaches the app as a request's would: percent-decoded. `/count%65r` is `/counter`, whose count
/// the snapshot then holds (undecoded, it was a 404 that warmed nothing, and passed).
#[test]
fn a_warm_up_path_is_percent_decoded_as_a_requests() {
    let app = built("plain", &["plain_app:application", "--warmup", "/count%65r"]);
    let server = Server::start(&app, 1, &[]);
    assert_eq!(server.get("/counter").text(), "2", "the warm-up request counted once in the snapshot");
}

// Instance reuse (`--instance-reuse N`, manifest `instance_reuse`): module state is kept across the requests of one
// app that one instance serves, never across apps, and never after a failed request.

#[test]
fn instance_reuse_keeps_module_state_across_requests_of_one_app() {
    let server = Server::start(&plain_app(), 1, &["--instance-reuse", "3"]);
    let counts: Vec<String> = (0..4).map(|_| server.get("/counter").text()).collect();
    assert_eq!(counts, ["1", "2", "3", "1"], "three requests share an instance, the fourth gets a fresh one");
}

#[test]
fn instance_reuse_drops_the_instance_after_a_failed_request() {
    let server = Server::start(&plain_app(), 1, &["--instance-reuse", "100"]);
    assert_eq!(server.get("/counter").text(), "1");
    assert_eq!(server.get("/counter").text(), "2");
    assert_eq!(server.get("/boom").status, 500);
    assert_eq!(server.get("/counter").text(), "1", "a failed request drops its instance");
}

#[test]
fn instance_reuse_never_shares_module_state_between_apps() {
    let app = plain_app();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let manifest = dir.path().join("apps.toml");
    let text = format!(
        "[[app]]\nname = \"first\"\ncomponent = {app:?}\nprefix = \"/first\"\ninstance_reuse = 100\n\n\
         [[app]]\nname = \"second\"\ncomponent = {app:?}\nprefix = \"/second\"\ninstance_reuse = 100\n"
    );
    std::fs::write(&manifest, text).expect("write the manifest");
    let mut command = crate::support::command(&[
        "serve",
        "--apps",
        manifest.to_str().expect("a UTF-8 path"),
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
    ]);
    command.current_dir(dir.path());
    let server = Server::spawn(command);
    server.wait_for_line("Booting worker with pid");
    let counts: Vec<String> =
        ["/first/counter", "/second/counter", "/first/counter", "/second/counter", "/first/counter"]
            .iter()
            .map(|path| server.get(path).text())
            .collect();
    assert_eq!(counts, ["1", "1", "2", "2", "3"], "each app counts its own requests, in its own instance");
}

/// pg8000, a pure-Python PostgreSQL driver, works over the sandbox's sockets: with `--allow-net` to the server, a
/// query runs (SCRAM-SHA-256 authentication included, which pg8000 does in Python); without it, the connection is
/// refused inside the sandbox and the request is a 500 with the traceback in the log.
#[test]
fn pg8000_queries_a_real_postgres_through_wasi_sockets() {
    let requirements = crate::support::python::app_dir("pg").join("requirements.txt");
    let requirements = requirements.to_str().expect("a UTF-8 path");
    let app = built("pg", &["pg_app:application", "--requirements", requirements]);
    let postgres = Postgres::start();
    let address = format!("127.0.0.1:{}", postgres.port);
    let port = format!("PGPORT={}", postgres.port);
    let env = ["--env", &port, "--env", "PGUSER=scramuser", "--env", "PGPASSWORD=scramsecret"];
    let mut args = vec!["--allow-net", &address];
    args.extend_from_slice(&env);
    let server = Server::start(&app, 1, &args);
    let response = server.get("/?seconds=0.05");
    assert_eq!(response.status, 200, "{}", server.log_text());
    assert_eq!(response.text(), "rows=[[2, '']]\n");
    assert!(postgres.log().contains("SELECT 1 + 1, pg_sleep($1)"), "the query reached PostgreSQL: {}", postgres.log());
    assert_no_traceback(&server);
    drop(server);

    let server = Server::start(&app, 1, &env);
    assert_eq!(server.get("/").status, 500, "without --allow-net");
    server.wait_for_line("Traceback");
    server.wait_for_line(&format!(
        "InterfaceError: Can't create a connection to host 127.0.0.1 and port {}",
        postgres.port
    ));
}
