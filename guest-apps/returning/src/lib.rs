//! A test guest of the `returning-app` world: `respond` returns the whole response, which the host checks and
//! sends as `start-response` and `write-body` would. It asks for `PATH_INFO` and `QUERY_STRING`
//! (`request.environ-var`), and by the path returns:
//! - `/big?kib=N`: `200` and N KiB of `a`, more than the host buffers before it streams;
//! - `/empty-204`: `204` with no body;
//! - `/bad-header`: a header whose name is not a token;
//! - `/long`: a body longer than its `Content-Length`;
//! - `/no-content`: a body for a `204`;
//! - `/amplify?mib=M&copies=N`: N headers whose values all point at the same M MiB of bytes, so that the host
//!   would copy N times M MiB out of a memory that holds M;
//! - `/err`: `err("no response for you")`;
//! - `/trap`: a trap;
//! - anything else: `200`, `text/plain`, `returned PATH`.
//!
//! `respond` is exported by hand, as the canonical ABI lays its result out, rather than through `wit-bindgen`'s
//! `export!`: only so can two headers name the same bytes.

wit_bindgen::generate!({ path: "../../wit", world: "returning-app" });

use std::cell::RefCell;

use wasmcorn::app::request::environ_var;

/// A response as the guest builds it, before it is laid out for the host.
struct Parts {
    status: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    /// Each header's value is these bytes instead of its own (`/amplify`).
    shared_value: Option<Vec<u8>>,
}

fn parts(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Parts {
    let headers = headers.iter().map(|(name, value)| (name.as_bytes().to_vec(), value.as_bytes().to_vec())).collect();
    Parts { status: status.to_string(), headers, body: body.to_vec(), shared_value: None }
}

fn answer() -> Result<Parts, String> {
    let path = environ_var("PATH_INFO").unwrap_or_default();
    let query = environ_var("QUERY_STRING").unwrap_or_default();
    let parameter = |name: &str| -> usize {
        let prefix = format!("{name}=");
        query.split('&').find_map(|pair| pair.strip_prefix(prefix.as_str())?.parse().ok()).unwrap_or(1)
    };
    Ok(match path.as_str() {
        "/big" => parts("200 OK", &[("Content-Type", "text/plain")], &vec![b'a'; parameter("kib") << 10]),
        "/empty-204" => parts("204 No Content", &[], b""),
        "/bad-header" => parts("200 OK", &[("Bad Name", "x")], b"never sent"),
        "/long" => parts("200 OK", &[("Content-Length", "3")], b"hello"),
        "/no-content" => parts("204 No Content", &[], b"x"),
        "/amplify" => {
            let headers = vec![("X-Big", ""); parameter("copies")];
            Parts { shared_value: Some(vec![b'a'; parameter("mib") << 20]), ..parts("200 OK", &headers, b"") }
        }
        "/err" => return Err("no response for you".to_string()),
        "/trap" => core::arch::wasm32::unreachable(),
        _ => parts("200 OK", &[("Content-Type", "text/plain")], format!("returned {path}").as_bytes()),
    })
}

/// What the host reads after `respond` returns: kept until the post-return, which drops it.
struct LaidOut {
    /// The result as the canonical ABI lays out `result<whole-response, string>`: the discriminant, then at
    /// offset 4 either the status, headers and body as (pointer, length) pairs or the error message's.
    area: [u32; 7],
    /// The header list: (name pointer, name length, value pointer, value length) for each header.
    headers: Vec<u32>,
    /// What the pointers name.
    parts: Option<Parts>,
    error: String,
}

thread_local! {
    static RETURNED: RefCell<Option<Box<LaidOut>>> = const { RefCell::new(None) };
}

fn pair(bytes: &[u8]) -> [u32; 2] {
    [bytes.as_ptr() as u32, bytes.len() as u32]
}

fn lay_out(answer: Result<Parts, String>) -> Box<LaidOut> {
    let mut laid = Box::new(LaidOut { area: [0; 7], headers: Vec::new(), parts: None, error: String::new() });
    match answer {
        Ok(parts) => {
            for (name, value) in &parts.headers {
                let value = parts.shared_value.as_deref().unwrap_or(value);
                laid.headers.extend(pair(name).into_iter().chain(pair(value)));
            }
            let [status, status_len] = pair(parts.status.as_bytes());
            let [body, body_len] = pair(&parts.body);
            let headers = [laid.headers.as_ptr() as u32, parts.headers.len() as u32];
            laid.area = [0, status, status_len, headers[0], headers[1], body, body_len];
            laid.parts = Some(parts);
        }
        Err(message) => {
            laid.error = message;
            let [message, message_len] = pair(laid.error.as_bytes());
            laid.area = [1, message, message_len, 0, 0, 0, 0];
        }
    }
    laid
}

/// `respond`, as the canonical ABI calls it: returns where its result lies.
#[unsafe(export_name = "respond")]
extern "C" fn respond() -> *const u32 {
    let laid = lay_out(answer());
    let area = laid.area.as_ptr();
    RETURNED.with(|returned| *returned.borrow_mut() = Some(laid));
    area
}

/// `respond`'s post-return: the host has read the result, which can go.
#[unsafe(export_name = "cabi_post_respond")]
extern "C" fn respond_post_return(_area: *const u32) {
    RETURNED.with(|returned| returned.borrow_mut().take());
}
