//! Guests built outside the binary: a component file given by path is served like a sample.

use crate::support::Server;

#[test]
fn component_file_is_served_by_path() {
    let server = Server::start(env!("WASMCORN_GUEST_ECHO"), 1, &["--env", "GREETING=hi"]);
    let response = server.get("/file");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["environ"]["PATH_INFO"], "/file");
}

#[test]
fn compiled_guest_is_cached_and_reused() {
    let cache = tempfile::tempdir().unwrap();
    let cache_path = cache.path().to_str().unwrap().to_string();
    let first = Server::start("sample:hello", 1, &["--cache-dir", &cache_path]);
    drop(first);
    let entries: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].extension().is_some_and(|ext| ext == "cwasm"));
    let modified = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    let second = Server::start("sample:hello", 1, &["--cache-dir", &cache_path]);
    assert_eq!(second.get("/").status, 200);
    assert_eq!(std::fs::metadata(&entries[0]).unwrap().modified().unwrap(), modified, "the artefact was reused");
}
