//! The bridge between one HTTP exchange and the guest: the guest's body reads and response calls land on the
//! client's connection through the http module. While the guest runs, its deadline bounds the waits for the
//! client (see `watched`); a read or write cut short by it is the guest's timeout, not the client's fault.

use super::watched::WatchedStream;
use crate::guest::{Deadline, Exchange, InstanceReport, ProxyHead, ResponseHeaders};
use crate::http::{BodyReader, Connection, HttpError, Request, ResponseWriter};

pub(super) struct HttpExchange {
    pub conn: Connection<WatchedStream>,
    pub body: BodyReader,
    pub response: ResponseWriter,
    /// The request body turned out malformed (or the client went silent) while the guest read it.
    pub body_error: Option<HttpError>,
    /// The guest's deadline while it runs.
    deadline: Option<Deadline>,
    /// The client asked for keep-alive and the worker can keep the connection (see `offer_keep_alive`).
    keep_alive: bool,
    /// The request as a standard `wasi:http` guest sees it, built only when the app is one.
    head: Option<ProxyHead>,
    /// What the request's instance cost, once the guest is done.
    pub instance: Option<InstanceReport>,
}

impl HttpExchange {
    pub(super) fn new(
        conn: Connection<WatchedStream>,
        request: &Request,
        body: BodyReader,
        keep_alive: bool,
        head: Option<ProxyHead>,
    ) -> Self {
        let response = ResponseWriter::new(request);
        HttpExchange { conn, body, response, body_error: None, deadline: None, keep_alive, head, instance: None }
    }

    /// Tells the response, before its head may leave, whether the connection can stay open: only when keep-alive
    /// was offered and the request body has been read whole and well (otherwise what is left of it would be read
    /// as the next request).
    pub(super) fn offer_keep_alive(&mut self) {
        let offer = self.keep_alive && self.body.is_done() && self.body_error.is_none();
        self.response.offer_keep_alive(offer);
    }

    /// The worker will close the connection after this response whatever the client asked (it is retired).
    pub(super) fn forgo_keep_alive(&mut self) {
        self.keep_alive = false;
    }

    /// Whether the connection may carry the next request: the response said so and went out whole.
    pub(super) fn keeps_alive(&self) -> bool {
        self.keep_alive && self.response.keeps_alive() && self.body.is_done() && self.body_error.is_none()
    }

    fn guest_is_late(&self) -> bool {
        self.deadline.as_ref().is_some_and(Deadline::has_passed)
    }
}

impl Exchange for HttpExchange {
    fn guest_deadline(&mut self, deadline: Option<Deadline>) {
        self.conn.stream().set_deadline(deadline.clone());
        self.deadline = deadline;
    }

    fn read_body(&mut self, max: usize) -> Result<Vec<u8>, String> {
        if let Some(err) = &self.body_error {
            return Err(err.to_string());
        }
        if self.response.is_on_the_wire() {
            self.body.forgo_continue();
        }
        self.body.read(&mut self.conn, max).map_err(|err| {
            let message = err.to_string();
            // A wait the guest's deadline cut short says nothing against the body: the guest timed out.
            if !self.guest_is_late() {
                self.body_error = Some(err);
            }
            message
        })
    }

    fn start_response(&mut self, status: &str, headers: ResponseHeaders) -> Result<(), String> {
        self.response.start(status, headers)
    }

    fn write_body(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.offer_keep_alive();
        self.response.write(&mut self.conn, chunk)
    }

    fn request_failed(&self) -> bool {
        self.body_error.is_some() || self.response.failure().is_some() || !self.response.was_started()
    }

    fn proxy_head(&self) -> Option<ProxyHead> {
        self.head.clone()
    }

    fn instance_report(&mut self, report: InstanceReport) {
        self.instance = Some(report);
    }
}
