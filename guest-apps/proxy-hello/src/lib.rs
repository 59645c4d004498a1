//! The `proxy-hello` sample: a standard `wasi:http/proxy` component (built with the `wasip2` crate, no wasmcorn
//! interface) that answers every request with `200 OK`, `text/plain` and `Hello, World!`.

use std::io::Write as _;

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let body = b"Hello, World!";
        let headers = Fields::from_list(&[
            ("content-type".to_string(), b"text/plain".to_vec()),
            ("content-length".to_string(), body.len().to_string().into_bytes()),
        ])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let outgoing = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let mut stream = outgoing.write().expect("the stream is taken once");
        stream.write_all(body).expect("the host takes the body");
        stream.flush().expect("the host takes the body");
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("the body is complete");
    }
}

wasip2::http::proxy::export!(Hello);
