//! One request to a `wasi:http` guest: a fresh store and instance, the guest's `handle` call, and the drain of
//! its response, side by side on the worker's current-thread tokio runtime. The response head goes through the
//! exchange's `start_response` (the worker validates it as any guest's) and each body chunk through `write_body`
//! as soon as the guest writes it: the outgoing body channel holds about one chunk, so a drain that waited for
//! the call to return would deadlock any larger response. The guest's time is the request's deadline: the epoch
//! interrupts a guest that computes past it, and a guest that waits past it is dropped, store and all.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Instant;

use http_body_util::BodyExt;
use tokio::sync::oneshot;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use super::incoming::{self, ExchangeBody, SharedExchange, with_exchange};
use super::outgoing::GrantedHttp;
use super::state::ProxyState;
use crate::guest::capabilities::{DirGrant, HttpGrant, NetGrant, wasi_ctx};
use crate::guest::deadline::Deadline;
use crate::guest::engine::store_limits;
use crate::guest::limits::WatchedLimits;
use crate::guest::exchange::{Exchange, InstanceReport};
use crate::guest::output::GuestOutput;
use crate::guest::instance::{MAX_RESOURCES, is_timeout};
use crate::guest::runtime::Outcome;
use crate::guest::trace::describe;

/// Everything one request to a `wasi:http` app runs with.
pub(in crate::guest) struct ProxyCall<'a> {
    pub engine: &'a Engine,
    /// The worker's current-thread runtime.
    pub tokio: &'a tokio::runtime::Runtime,
    pub pre: &'a ProxyPre<ProxyState>,
    pub env: &'a [(String, String)],
    pub dirs: &'a [DirGrant],
    pub net: &'a Arc<NetGrant>,
    pub http: &'a Arc<HttpGrant>,
    pub max_memory_bytes: usize,
    /// The request's deadline, which the runtime's deadline timer watches.
    pub deadline: Deadline,
    pub stdout: &'a GuestOutput,
    pub stderr: &'a GuestOutput,
}

type ResponseResult = Result<hyper::Response<HyperOutgoingBody>, ErrorCode>;

/// What became of the guest's response, as the drain saw it.
enum Delivery {
    /// The whole body went to the exchange (or the exchange refused the head or a chunk: it knows why).
    Done,
    /// The handler never set its response outparam.
    NoResponse,
    /// The guest answered with an `error-code` instead of a response.
    ErrorCode(ErrorCode),
    /// The guest's body stream failed (it dropped the body without finishing it).
    BodyFailed(String),
}

/// Runs one request in a fresh instance and gives the exchange back with what became of it.
pub(in crate::guest) fn handle<E: Exchange>(call: ProxyCall<'_>, mut exchange: E) -> (E, Outcome) {
    let Some(head) = exchange.proxy_head() else {
        return (exchange, Outcome::Failed("this exchange cannot serve a wasi:http guest".into()));
    };
    let wasi = match wasi_ctx(call.env, call.dirs, call.net, call.stdout.clone(), call.stderr.clone()) {
        Ok(wasi) => wasi,
        Err(err) => return (exchange, Outcome::Failed(format!("{err:#}"))),
    };
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    let deadline = call.deadline;
    exchange.guest_deadline(Some(deadline.clone()));
    let state = ProxyState {
        wasi,
        http: WasiHttpCtx::new(),
        table,
        limits: WatchedLimits::new(store_limits(call.max_memory_bytes)),
        net: Arc::clone(call.net),
        hooks: GrantedHttp::new(Arc::clone(call.http)),
    };
    let mut store = Store::new(call.engine, state);
    store.limiter(|state| &mut state.limits);
    store.set_max_component_handles(MAX_RESOURCES);
    // The epoch advances only when a running guest's deadline has passed (see `timer`); the deadline may have
    // moved since (time given back for the client's bytes), so it is checked here.
    store.set_epoch_deadline(1);
    let epoch_deadline = deadline.clone();
    store.epoch_deadline_callback(move |_| {
        Ok(if epoch_deadline.has_passed() { UpdateDeadline::Interrupt } else { UpdateDeadline::Continue(1) })
    });
    let shared: SharedExchange<E> = Arc::new(Mutex::new(Some(exchange)));
    let mut report = InstanceReport::default();
    let outcome = match incoming::request(&head, Arc::clone(&shared)) {
        Ok((scheme, request)) => {
            call.tokio.block_on(serve(store, call.pre, scheme, request, &shared, &deadline, &mut report))
        }
        Err(err) => Outcome::Failed(format!("{err:#}")),
    };
    let taken = shared.lock().unwrap_or_else(PoisonError::into_inner).take();
    // The store, and with it the request body's handle on the exchange, is gone: only this function takes it.
    let mut exchange = taken.expect("the exchange is taken back once, by the function that put it there");
    exchange.guest_deadline(None);
    exchange.instance_report(report);
    (exchange, outcome)
}

/// Calls the guest's handler and drains its response side by side; the store ends with the call. What the
/// instance cost goes to `report`.
async fn serve<E: Exchange>(
    mut store: Store<ProxyState>,
    pre: &ProxyPre<ProxyState>,
    scheme: Scheme,
    request: http::Request<ExchangeBody<E>>,
    shared: &SharedExchange<E>,
    deadline: &Deadline,
    report: &mut InstanceReport,
) -> Outcome {
    let (sender, receiver) = oneshot::channel::<ResponseResult>();
    let resources = {
        let mut http = store.data_mut().http();
        http.new_incoming_request(scheme, request)
            .and_then(|request| Ok((request, http.new_response_outparam(sender)?)))
    };
    let (request, outparam) = match resources {
        Ok(resources) => resources,
        Err(err) => return Outcome::Failed(describe(&err)),
    };
    let guest = async move {
        let result = async {
            let creating = Instant::now();
            let proxy = pre.instantiate_async(&mut store).await;
            report.created_in = Some(creating.elapsed());
            proxy?.wasi_http_incoming_handler().call_handle(&mut store, request, outparam).await
        }
        .await;
        report.memory_refused = store.data().limits.memory_refused;
        // Dropping the store ends the response body the guest left open, so the drain ends too.
        drop(store);
        result
    };
    let (called, delivered) = match both(within(deadline, guest), drain(receiver, shared)).await {
        (Some(called), Some(delivered)) => (called, delivered),
        _ => return Outcome::Failed("the call ended without its outcome".into()),
    };
    match called {
        None => Outcome::TimedOut("the guest's time ran out while it waited in a host call".into()),
        Some(Err(err)) if is_timeout(&err) => Outcome::TimedOut(describe(&err)),
        Some(Err(err)) => Outcome::Failed(describe(&err)),
        Some(Ok(())) => match delivered {
            Delivery::Done => Outcome::Completed,
            Delivery::NoResponse => Outcome::Failed("the handler returned without setting its response".into()),
            Delivery::ErrorCode(code) => Outcome::Refused(format!("the guest answered with an error: {code:?}")),
            Delivery::BodyFailed(reason) => Outcome::Failed(format!("the guest's response body failed: {reason}")),
        },
    }
}

/// Runs `future` until the guest's deadline (which the exchange may move later while it serves the client);
/// `None` if the deadline came first.
async fn within<F: Future>(deadline: &Deadline, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    loop {
        let remaining = deadline.remaining();
        if remaining.is_zero() {
            return None;
        }
        let mut sleep = pin!(tokio::time::sleep(remaining));
        let finished = poll_fn(|context| match future.as_mut().poll(context) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => sleep.as_mut().poll(context).map(|()| None),
        })
        .await;
        if finished.is_some() {
            return finished;
        }
    }
}

/// Runs two futures side by side until both are done.
async fn both<A: Future, B: Future>(first: A, second: B) -> (Option<A::Output>, Option<B::Output>) {
    let (mut first, mut second) = (pin!(first), pin!(second));
    let (mut first_output, mut second_output) = (None, None);
    poll_fn(|context| {
        if first_output.is_none()
            && let Poll::Ready(output) = first.as_mut().poll(context)
        {
            first_output = Some(output);
        }
        if second_output.is_none()
            && let Poll::Ready(output) = second.as_mut().poll(context)
        {
            second_output = Some(output);
        }
        if first_output.is_some() && second_output.is_some() {
            return Poll::Ready((first_output.take(), second_output.take()));
        }
        Poll::Pending
    })
    .await
}

/// Waits for the guest's response and passes it to the exchange: the head, then each body chunk as it comes.
async fn drain<E: Exchange>(receiver: oneshot::Receiver<ResponseResult>, shared: &SharedExchange<E>) -> Delivery {
    let response = match receiver.await {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => return Delivery::ErrorCode(code),
        Err(_) => return Delivery::NoResponse,
    };
    let (parts, mut body) = response.into_parts();
    let status = parts.status.as_u16().to_string();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        // Latin-1, one char per byte: the writer refuses CR, LF and NUL whatever their encoding.
        .map(|(name, value)| {
            (name.as_str().to_string(), value.as_bytes().iter().map(|&byte| char::from(byte)).collect())
        })
        .collect();
    match with_exchange(shared, |exchange| exchange.start_response(&status, headers)) {
        Some(Ok(())) => {}
        // The exchange refused the head and knows why.
        Some(Err(_)) | None => return Delivery::Done,
    }
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: HTTP/1.1 responses from wasmcorn carry none.
                Err(_) => continue,
            },
            Err(err) => return Delivery::BodyFailed(err.to_string()),
        };
        match with_exchange(shared, |exchange| exchange.write_body(&data)) {
            Some(Ok(())) => {}
            // The client is gone or the body broke the contract: stop draining; the guest's next write fails.
            Some(Err(_)) | None => return Delivery::Done,
        }
    }
    Delivery::Done
}
