//! A test guest of the `returning-app` world: `respond` returns the whole response, which the host checks and
//! sends as `start-response` and `write-body` would. It asks for `PATH_INFO` and `QUERY_STRING`
//! (`request.environ-var`), and by the path returns:
//! - `/big?kib=N`: `200` and N KiB of `a`, more than the host buffers before it streams;
//! - `/empty-204`: `204` with no body;
//! - `/bad-header`: a header whose name is not a token;
//! - `/long`: a body longer than its `Content-Length`;
//! - `/no-content`: a body for a `204`;
//! - `/err`: `err("no response for you")`;
//! - `/trap`: a trap;
//! - anything else: `200`, `text/plain`, `returned PATH`.

wit_bindgen::generate!({ path: "../../wit", world: "returning-app" });

use wasmcorn::app::request::environ_var;

struct Returning;

fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> WholeResponse {
    WholeResponse {
        status: status.to_string(),
        headers: headers.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect(),
        body: body.to_vec(),
    }
}

impl Guest for Returning {
    fn respond() -> Result<WholeResponse, String> {
        let path = environ_var("PATH_INFO").unwrap_or_default();
        let query = environ_var("QUERY_STRING").unwrap_or_default();
        Ok(match path.as_str() {
            "/big" => {
                let kib: usize = query.strip_prefix("kib=").and_then(|kib| kib.parse().ok()).unwrap_or(1);
                response("200 OK", &[("Content-Type", "text/plain")], &vec![b'a'; kib << 10])
            }
            "/empty-204" => response("204 No Content", &[], b""),
            "/bad-header" => response("200 OK", &[("Bad Name", "x")], b"never sent"),
            "/long" => response("200 OK", &[("Content-Length", "3")], b"hello"),
            "/no-content" => response("204 No Content", &[], b"x"),
            "/err" => return Err("no response for you".to_string()),
            "/trap" => core::arch::wasm32::unreachable(),
            _ => response("200 OK", &[("Content-Type", "text/plain")], format!("returned {path}").as_bytes()),
        })
    }
}

export!(Returning);
