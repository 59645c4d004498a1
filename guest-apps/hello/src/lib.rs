//! The `hello` sample: answers every request with `200 OK`, `text/plain` and `Hello, World!`.

wit_bindgen::generate!({ path: "../../wit", world: "app" });

use wasmcorn::app::response::{start_response, write_body};

struct Hello;

impl Guest for Hello {
    fn handle(_environ: Vec<(String, String)>) -> Result<(), String> {
        let body = b"Hello, World!";
        start_response(
            "200 OK",
            &[
                ("Content-Type".to_string(), "text/plain".to_string()),
                ("Content-Length".to_string(), body.len().to_string()),
            ],
        )?;
        write_body(body)
    }
}

export!(Hello);
