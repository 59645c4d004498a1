//! The `proxy-echo` sample: a standard `wasi:http/proxy` component that streams the request body back as the
//! response body (`200`, `application/octet-stream`, no length: the host chunks it), 64 KiB at a time, reading
//! and writing side by side, so that a body of any size passes through a bounded amount of guest memory.

use std::io::Write as _;

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Echo;

impl wasip2::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[("content-type".to_string(), b"application/octet-stream".to_vec())])
            .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let outgoing = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let incoming = request.consume().expect("the body is taken once");
        let mut input = incoming.stream().expect("the stream is taken once");
        let mut output = outgoing.write().expect("the stream is taken once");
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match std::io::Read::read(&mut input, &mut buffer) {
                Ok(0) => break,
                Ok(read) => output.write_all(&buffer[..read]).expect("the host takes the body"),
                // A body the host could not read (too large, malformed): stop; the host answers for it.
                Err(err) => panic!("cannot read the request body: {err}"),
            }
        }
        output.flush().expect("the host takes the body");
        drop(output);
        drop(input);
        OutgoingBody::finish(outgoing, None).expect("the body is complete");
    }
}

wasip2::http::proxy::export!(Echo);
