//! The `proxy-fetch` sample: a standard `wasi:http/proxy` component that sends one outgoing request through
//! `wasi:http/outgoing-handler` and tells what came back. `GET /?to=HOST:PORT/PATH` sends `GET http://HOST:PORT/PATH`
//! and answers `200` with `status N: BODY` when a response came, or `error: CODE` (the `error-code` the host gave,
//! `HttpRequestDenied` for an authority the operator did not grant).

use std::io::{Read as _, Write as _};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme,
};

struct Fetch;

impl wasip2::exports::http::incoming_handler::Guest for Fetch {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let target = query.split_once("to=").map(|(_, to)| to.to_string()).unwrap_or_default();
        let answer = match fetch(&target) {
            Ok((status, body)) => format!("status {status}: {body}"),
            Err(code) => format!("error: {code:?}"),
        };
        let response = OutgoingResponse::new(Fields::new());
        let outgoing = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let mut stream = outgoing.write().expect("the stream is taken once");
        stream.write_all(answer.as_bytes()).expect("the host takes the body");
        stream.flush().expect("the host takes the body");
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("the body is complete");
    }
}

/// Sends `GET http://TARGET` (TARGET is `HOST:PORT/PATH`) and returns the status and the body.
fn fetch(target: &str) -> Result<(u16, String), ErrorCode> {
    let (authority, path) = match target.find('/') {
        Some(slash) => target.split_at(slash),
        None => (target, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let invalid = |what: &str| ErrorCode::InternalError(Some(format!("invalid {what}")));
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| invalid("scheme"))?;
    request.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
    request.set_path_with_query(Some(path)).map_err(|()| invalid("path"))?;
    let pending = outgoing_handler::handle(request, None)?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(result)) => result?,
        Some(Err(())) => return Err(ErrorCode::InternalError(Some("the response was taken twice".into()))),
        None => return Err(ErrorCode::InternalError(Some("no response after the wait".into()))),
    };
    let status = response.status();
    let incoming = response.consume().map_err(|()| invalid("body"))?;
    let mut stream = incoming.stream().map_err(|()| invalid("body stream"))?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).map_err(|err| ErrorCode::InternalError(Some(err.to_string())))?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

wasip2::http::proxy::export!(Fetch);
