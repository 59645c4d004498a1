//! Standard `wasi:http` proxy components (built with the `wasip2` crate in `guest-apps/proxy-*`) served by the
//! sync workers beside `wasmcorn:app` guests: the head and body through the worker's own parser and response
//! writer, the same sandbox (timeouts, traps, output to the log), outgoing HTTP only to granted authorities.

use crate::support::Server;

const HELLO: &str = env!("WASMCORN_GUEST_PROXY_HELLO");

#[test]
fn proxy_hello_component_is_served_and_answers_head_without_a_body() {
    let server = Server::start(HELLO, 1, &[]);
    let response = server.get("/any/path?x=1");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Hello, World!");
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(response.header("content-length"), Some("13"));
    assert_eq!(response.header("server"), Some("wasmcorn"));
    assert!(response.header("date").is_some());
    let head = server.request(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("13"));
    assert!(head.body.is_empty(), "{:?}", head.text());
    server.wait_for_line("\"HEAD / HTTP/1.1\" 200");
}
