//! A `wasi:http` guest's outgoing requests (`wasi:http/outgoing-handler`): each one is checked against the
//! authorities the operator granted (`--allow-http`, `allow_http`) and sent over plain HTTP/1.1 to the addresses
//! that authority resolved to when the server started (the `--allow-net` rule: no lookup at request time, so a
//! name cannot be pointed elsewhere later). Any other authority fails inside the guest with `HTTP-request-denied`.
//! TLS is not offered: a granted `https` authority fails too, with a message saying so. A store has at most
//! `MAX_IN_FLIGHT` requests out at once, each counted until its connection ends, so that an instance kept for
//! reuse is kept only when none of its requests outlives its call. Its outgoing bodies, requests' and response's,
//! take at most two writes of `BODY_CHUNK` bytes at a time.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use http::uri::Scheme;
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::guest::capabilities::HttpGrant;

/// How long a connection and a response's first byte may take when the guest sets no timeout of its own. The
/// guest timeout bounds them anyway: an instance whose requests are still out when its call returns is dropped.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The most outgoing requests one store may have out at once (each holds a socket of the worker).
const MAX_IN_FLIGHT: usize = 64;
/// The most bytes one write to an outgoing body takes (see `p2_outgoing_body_chunk_size`).
const BODY_CHUNK: usize = 64 * 1024;

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type Sent = Result<(http::Response<WasiBody>, IoFuture), Error>;

/// The `wasi:http` hooks of one store: where its outgoing requests may go, and how many are out.
pub(in crate::guest) struct GrantedHttp {
    grant: Arc<HttpGrant>,
    /// The most bytes of a response head an upstream may send (the size of a `fields` the guest builds): the heads
    /// the guest keeps then cost at most its memory limit together, as the header maps it builds do.
    head_most: usize,
    /// One clone per request out, held by its send and then by the future that drives its connection.
    out: Arc<()>,
    /// Whether the store ever sent a request.
    sent: bool,
}

impl GrantedHttp {
    pub(in crate::guest) fn new(grant: Arc<HttpGrant>, head_most: usize) -> Self {
        GrantedHttp { grant, head_most, out: Arc::new(()), sent: false }
    }

    /// Whether the store ever sent a request (the tasks of its connections may then still be on the runtime).
    pub(in crate::guest) fn has_sent(&self) -> bool {
        self.sent
    }

    /// How many of the store's outgoing requests are still out (sending, or their connection still open).
    pub(in crate::guest) fn in_flight(&self) -> usize {
        Arc::strong_count(&self.out) - 1
    }
}

impl WasiHttpHooks for GrantedHttp {
    /// One write to an outgoing body (a request's, or the guest's response) takes at most `BODY_CHUNK` bytes, and
    /// one more write waits: a body never sent (a request the guest makes and keeps, without a grant even) then
    /// holds at most 128 KiB of the worker's heap, not wasmtime's 2 MiB (a few hundred MiB over the resources a
    /// guest may hold, whatever `--max-memory` said).
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _body_sent: IoFuture,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        self.sent = true;
        let destination = destination(&self.grant, request.uri());
        let out = Arc::clone(&self.out);
        let head_most = self.head_most;
        let busy = Arc::strong_count(&out) - 1 > MAX_IN_FLIGHT;
        Box::new(async move {
            if busy {
                return Err(Error::InternalError(Some(format!("more than {MAX_IN_FLIGHT} outgoing requests at once"))));
            }
            send(request, destination?, options, head_most, out).await
        })
    }
}

/// Where a request to `uri` may go: the granted addresses of its authority (port 80 for `http`, 443 for
/// `https` when none is given), or why not. An authority with userinfo (`name@host`) is refused: the grant
/// would be checked for `host` while the whole authority goes out as the `Host` header, which a shared ingress
/// in front of a granted address could route to a host never granted.
fn destination(grant: &HttpGrant, uri: &http::Uri) -> Result<Vec<SocketAddr>, Error> {
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    if authority.as_str().contains('@') {
        return Err(Error::HttpRequestUriInvalid);
    }
    let https = uri.scheme() == Some(&Scheme::HTTPS);
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addresses = grant.addresses_of(authority.host(), port).ok_or(Error::HttpRequestDenied)?;
    if https {
        return Err(Error::InternalError(Some("wasmcorn sends outgoing requests over plain HTTP only".into())));
    }
    Ok(addresses.to_vec())
}

/// Connects to one of `addresses`, sends the request and returns the response head, with the future that drives
/// the connection while the guest reads the response body.
async fn send(
    mut request: http::Request<WasiBody>,
    addresses: Vec<SocketAddr>,
    options: Option<RequestOptions>,
    head_most: usize,
    out: Arc<()>,
) -> Sent {
    let connect_timeout = options.and_then(|options| options.connect_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options.and_then(|options| options.first_byte_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(&addresses[..]))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let (mut sender, connection) = tokio::time::timeout(
        connect_timeout,
        // hyper's read buffer grows to about this much (8 KiB at the least, which it requires) for a head that
        // arrives in parts; one that arrives whole may be read in one go, so the head is measured below too.
        hyper::client::conn::http1::Builder::new().max_buf_size(head_most.max(8192)).handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // Origin-form on the wire; the Host header carries the authority.
    let path = request.uri().path_and_query().map_or("/", |path| path.as_str()).to_string();
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = async move {
        tokio::time::timeout(first_byte_timeout, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(Error::from)
    };
    // The connection must be driven while the response head is awaited; it may also end first.
    let mut response = pin!(response);
    let mut connection = Some(connection);
    let response = poll_fn(|context| match response.as_mut().poll(context) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(driving) = connection.as_mut() else { return Poll::Pending };
            let ended = ready!(Pin::new(driving).poll(context));
            connection = None;
            match ended {
                Ok(()) => response.as_mut().poll(context),
                Err(err) => Poll::Ready(Err(Error::from(err))),
            }
        }
    })
    .await?;
    // hyper's buffer bounds a head read a little at a time, not one that arrived whole: the bound is checked here,
    // and a larger head is dropped at once instead of being handed to the guest to keep.
    let head_size: usize = response.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if head_size > head_most {
        return Err(Error::HttpResponseHeaderSectionSize(u32::try_from(head_size).ok()));
    }
    let io: IoFuture = Box::new(async move {
        // Counted as out until the connection ends.
        let _out = out;
        match connection {
            Some(connection) => connection.await.map_err(Error::from),
            None => Ok(()),
        }
    });
    Ok((response.map(|body| body.map_err(Error::from).boxed_unsync()), io))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::capabilities::HttpAuthority;

    #[test]
    fn only_granted_authorities_are_sent_to() {
        let address: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let grant = HttpGrant {
            authorities: vec![
                HttpAuthority { host: "127.0.0.1".into(), port: 8080, addresses: vec![address] },
                HttpAuthority { host: "api.example".into(), port: 80, addresses: vec![address] },
            ],
        };
        let to = |uri: &str| destination(&grant, &uri.parse().unwrap());
        assert_eq!(to("http://127.0.0.1:8080/x").unwrap(), vec![address]);
        assert_eq!(to("http://API.example/x").unwrap(), vec![address]);
        assert!(matches!(to("http://127.0.0.1:8081/x"), Err(Error::HttpRequestDenied)));
        assert!(matches!(to("http://127.0.0.1/x"), Err(Error::HttpRequestDenied)));
        assert!(matches!(to("http://api.example.attacker.test/x"), Err(Error::HttpRequestDenied)));
        assert!(matches!(to("https://api.example:80/x"), Err(Error::InternalError(_))));
        assert!(matches!(to("https://api.example/x"), Err(Error::HttpRequestDenied)));
    }
}
