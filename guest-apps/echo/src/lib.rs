//! The `echo` sample: answers with what it received, as JSON:
//! `{"environ": {NAME: value, ...}, "env": {NAME: value, ...}, "body": "<body, lossy UTF-8>", "body_length": N}`,
//! where `env` is the guest's own environment (what the operator gave it with `--env` or a manifest's `env`).
//! It is how guest authors (and the tests) see exactly what a guest is given. It is a guest of the `lazy-app`
//! world: it asks for the whole environ (`request.environ`), which is what `app`'s `handle` would be given.

wit_bindgen::generate!({ path: "../../wit", world: "lazy-app" });

use wasmcorn::app::request::{environ, read_body};
use wasmcorn::app::response::{start_response, write_body};

struct Echo;

impl Guest for Echo {
    fn handle_request() -> Result<(), String> {
        let environ = environ();
        let mut body = Vec::new();
        loop {
            let chunk = read_body(64 * 1024)?;
            if chunk.is_empty() {
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let environ: serde_json::Map<String, serde_json::Value> =
            environ.into_iter().map(|(name, value)| (name, serde_json::Value::String(value))).collect();
        let env: serde_json::Map<String, serde_json::Value> =
            std::env::vars().map(|(name, value)| (name, serde_json::Value::String(value))).collect();
        let answer = serde_json::json!({
            "environ": environ,
            "env": env,
            "body": String::from_utf8_lossy(&body),
            "body_length": body.len(),
        });
        let answer = serde_json::to_vec(&answer).map_err(|err| err.to_string())?;
        start_response("200 OK", &[("Content-Type".to_string(), "application/json".to_string())])?;
        write_body(&answer)
    }
}

export!(Echo);
