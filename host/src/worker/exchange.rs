//! The bridge between one HTTP exchange and the guest: the guest's body reads and response calls land on the
//! client's connection through the http module. While the guest runs, its deadline bounds the waits for the
//! client (see `watched`); a read or write cut short by it is the guest's timeout, not the client's fault.

use super::watched::WatchedStream;
use crate::guest::{Deadline, Exchange, InstanceReport};
use crate::http::{BodyReader, Connection, HttpError, Request, ResponseWriter};

pub(super) struct HttpExchange {
    pub conn: Connection<WatchedStream>,
    pub body: BodyReader,
    pub response: ResponseWriter,
    /// The request body turned out malformed (or the client went silent) while the guest read it.
    pub body_error: Option<HttpError>,
    /// The guest's deadline while it runs.
    deadline: Option<Deadline>,
    /// What the request's instance cost, once the guest is done.
    pub instance: Option<InstanceReport>,
}

impl HttpExchange {
    pub(super) fn new(conn: Connection<WatchedStream>, request: &Request, body: BodyReader) -> Self {
        HttpExchange {
            conn,
            body,
            response: ResponseWriter::new(request),
            body_error: None,
            deadline: None,
            instance: None,
        }
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

    fn start_response(&mut self, status: &str, headers: Vec<(String, String)>) -> Result<(), String> {
        self.response.start(status, headers)
    }

    fn write_body(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.response.write(&mut self.conn, chunk)
    }

    fn instance_report(&mut self, report: InstanceReport) {
        self.instance = Some(report);
    }
}
