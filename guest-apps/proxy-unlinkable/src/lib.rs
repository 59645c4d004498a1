//! The `proxy-unlinkable` test component: a `wasi:http` proxy that also imports an interface wasmcorn does not
//! provide (`fermyon:spin/key-value`, as a Spin app would), so that the server refuses it at start, in one line
//! naming the import. Never served.

wit_bindgen::generate!({
    inline: "package fermyon:spin; interface key-value { get: func(key: string) -> string; } world spin { import key-value; }",
});

use std::io::Write as _;

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Unlinkable;

impl wasip2::exports::http::incoming_handler::Guest for Unlinkable {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let value = fermyon::spin::key_value::get("greeting");
        let response = OutgoingResponse::new(Fields::new());
        let outgoing = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let mut stream = outgoing.write().expect("the stream is taken once");
        stream.write_all(value.as_bytes()).expect("the host takes the body");
        stream.flush().expect("the host takes the body");
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("the body is complete");
    }
}

wasip2::http::proxy::export!(Unlinkable);
