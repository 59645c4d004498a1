//! One request to a `wasi:http` guest: its store and instance (see `instance`: a fresh one, or the one the app's
//! previous request left when the app reuses instances), the guest's `handle` call, and the drain of its response, side by side on the worker's current-thread tokio runtime. The response head goes through the
//! exchange's `start_response` (the worker validates it as any guest's) and each body chunk through `write_body`
//! as soon as the guest writes it: the outgoing body channel holds about one chunk, so a drain that waited for
//! the call to return would deadlock any larger response. The guest's time is the request's deadline: the epoch
//! interrupts a guest that computes past it, and a guest that waits past it is dropped, store and all, as is a
//! kept instance whose response body is still unfinished at the deadline.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Instant;

use http_body_util::BodyExt;
use tokio::sync::oneshot;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::incoming::{self, ExchangeBody, SharedExchange, with_exchange};
use super::instance::ProxyInstance;
use super::state::ProxyState;
use crate::guest::deadline::Deadline;
use crate::guest::exchange::{Exchange, InstanceReport, ResponseHeaders};
use crate::guest::instance::is_timeout;
use crate::guest::runtime::Outcome;
use crate::guest::trace::describe;

/// Everything one request to a `wasi:http` app runs with, besides its instance.
pub(in crate::guest) struct ProxyCall<'a> {
    /// The worker's current-thread runtime.
    pub tokio: &'a tokio::runtime::Runtime,
    pub pre: &'a ProxyPre<ProxyState>,
    /// The request's deadline, which the runtime's deadline timer watches.
    pub deadline: Deadline,
    /// The instance may serve another request after this one: it is given back if this one completes.
    pub keep: bool,
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
    /// The handler returned with its response (or the response's body) neither finished nor dropped: kept in the
    /// instance, it can never end. wasi:http counts a body not finished as corrupt.
    Unfinished,
}

/// Runs one request in `instance` and gives the exchange back with what became of it, and the instance when
/// `call.keep` allows it and the request completed.
pub(in crate::guest) fn handle<E: Exchange>(
    call: ProxyCall<'_>,
    mut instance: ProxyInstance,
    mut exchange: E,
) -> (E, Outcome, Option<ProxyInstance>) {
    let Some(head) = exchange.proxy_head() else {
        return (exchange, Outcome::Failed("this exchange cannot serve a wasi:http guest".into()), None);
    };
    exchange.guest_deadline(Some(call.deadline.clone()));
    instance.begin(&call.deadline);
    // The guest's output is logged by the end of the request, whatever becomes of the instance.
    let output = instance.output();
    let shared: SharedExchange<E> = Arc::new(Mutex::new(Some(exchange)));
    let mut report = InstanceReport::default();
    // Until the call says the guest sent no request (a call cut at its deadline never says).
    let mut sent_requests = true;
    let (outcome, kept) = match incoming::request(&head, Arc::clone(&shared)) {
        Ok((scheme, request)) => call.tokio.block_on(async {
            let served = serve(instance, &call, scheme, request, &shared, &mut report, &mut sent_requests).await;
            if sent_requests {
                // An instance dropped with the call aborted the tasks of its outgoing requests; the runtime runs
                // only inside `block_on`, so they are let run once here to end, and close their connections now
                // rather than at the worker's next wasi:http request.
                tokio::task::yield_now().await;
            }
            served
        }),
        Err(err) => (Outcome::Failed(format!("{err:#}")), None),
    };
    output.finish();
    let taken = shared.lock().unwrap_or_else(PoisonError::into_inner).take();
    // The request body's handle on the exchange is gone with the request's resources (the guest dropped them, or
    // the store went with them): only this function takes the exchange.
    let mut exchange = taken.expect("the exchange is taken back once, by the function that put it there");
    exchange.guest_deadline(None);
    exchange.instance_report(report);
    let kept = kept.filter(|_| matches!(outcome, Outcome::Completed) && !exchange.request_failed());
    (exchange, outcome, kept)
}

/// Calls the guest's handler and drains its response side by side. The instance ends with the call unless
/// `keep`; kept, it is given back once the call returned (whatever the outcome: the caller drops it unless the
/// request completed). What the instance cost goes to `report`, and whether it ever sent a request to
/// `sent_requests`.
async fn serve<E: Exchange>(
    mut instance: ProxyInstance,
    call: &ProxyCall<'_>,
    scheme: Scheme,
    request: http::Request<ExchangeBody<E>>,
    shared: &SharedExchange<E>,
    report: &mut InstanceReport,
    sent_requests: &mut bool,
) -> (Outcome, Option<ProxyInstance>) {
    let (pre, keep, deadline) = (call.pre, call.keep, &call.deadline);
    let (sender, receiver) = oneshot::channel::<ResponseResult>();
    let resources = {
        let mut http = instance.store.data_mut().http();
        http.new_incoming_request(scheme, request)
            .and_then(|request| Ok((request, http.new_response_outparam(sender)?)))
    };
    let (request, outparam) = match resources {
        Ok(resources) => resources,
        Err(err) => return (Outcome::Failed(describe(&err)), None),
    };
    let guest = async move {
        let result = async {
            let proxy = match &mut instance.proxy {
                Some(proxy) => proxy,
                empty @ None => {
                    let creating = Instant::now();
                    let proxy = pre.instantiate_async(&mut instance.store).await;
                    report.created_in = Some(creating.elapsed());
                    empty.insert(proxy?)
                }
            };
            proxy.wasi_http_incoming_handler().call_handle(&mut instance.store, request, outparam).await
        }
        .await;
        instance.served = instance.served.saturating_add(1);
        report.memory_refused = instance.store.data().limits.memory_refused;
        *sent_requests = instance.store.data().hooks.has_sent();
        // The instance outlives the call until the drain is done, kept or not: dropping its store would end a
        // response body the guest left open as if it were complete (see `Delivery::Unfinished`).
        (result, instance)
    };
    let called_back = std::cell::Cell::new(false);
    let guest = async {
        let called = guest.await;
        called_back.set(true);
        called
    };
    let drain = until_abandoned(drain(receiver, shared), &called_back);
    let (called, delivered) = match both(within(deadline, guest), within(deadline, drain)).await {
        (Some(called), Some(delivered)) => (called, delivered),
        _ => return (Outcome::Failed("the call ended without its outcome".into()), None),
    };
    let (called, kept) = match called {
        Some((result, instance)) => {
            // An instance whose outgoing requests outlive its call is not kept: they would run on, unbounded by
            // any request's deadline.
            let idle = instance.store.data().hooks.in_flight() == 0;
            let kept = if keep && idle && result.is_ok() { Some(instance) } else { None };
            (Some(result), kept)
        }
        None => (None, None),
    };
    let outcome = match (called, delivered) {
        (None, _) => Outcome::TimedOut("the guest's time ran out while it waited in a host call".into()),
        (Some(Err(err)), _) if is_timeout(&err) => Outcome::TimedOut(describe(&err)),
        (Some(Err(err)), _) => Outcome::Failed(describe(&err)),
        (Some(Ok(())), None) => {
            return (Outcome::TimedOut("the guest's response body was still open at its deadline".into()), None);
        }
        (Some(Ok(())), Some(delivery)) => match delivery {
            Delivery::Done => Outcome::Completed,
            Delivery::NoResponse => Outcome::Failed("the handler returned without setting its response".into()),
            Delivery::ErrorCode(code) => Outcome::Refused(format!("the guest answered with an error: {code:?}")),
            Delivery::BodyFailed(reason) => Outcome::Failed(format!("the guest's response body failed: {reason}")),
            Delivery::Unfinished => Outcome::Failed(
                "the handler returned with its response unfinished (its body neither finished nor dropped)".into(),
            ),
        },
    };
    (outcome, kept)
}

/// Runs the drain until it is done, or until it waits with the guest's call over (`called_back`): no guest code
/// runs any more then, and what the guest wrote before it returned is already in the body's channel, so a drain
/// still waiting waits for a response or a body end that will never come.
async fn until_abandoned(drain: impl Future<Output = Delivery>, called_back: &std::cell::Cell<bool>) -> Delivery {
    let mut drain = pin!(drain);
    poll_fn(|context| match drain.as_mut().poll(context) {
        Poll::Ready(delivery) => Poll::Ready(delivery),
        Poll::Pending if called_back.get() => Poll::Ready(Delivery::Unfinished),
        Poll::Pending => Poll::Pending,
    })
    .await
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
    let headers: ResponseHeaders =
        parts.headers.iter().map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec())).collect();
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
            // On the log's line as any text a guest may have shaped (see `log::escape`).
            Err(err) => return Delivery::BodyFailed(crate::log::escape(&err.to_string()).into_owned()),
        };
        match with_exchange(shared, |exchange| exchange.write_body(&data)) {
            Some(Ok(())) => {}
            // The client is gone or the body broke the contract: stop draining; the guest's next write fails.
            Some(Err(_)) | None => return Delivery::Done,
        }
    }
    Delivery::Done
}
