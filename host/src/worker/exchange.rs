//! The bridge between one HTTP exchange and the guest: the guest's body reads and response calls land on the
//! client's connection through the http module.

use crate::guest::Exchange;
use crate::http::{BodyReader, Connection, HttpError, Request, ResponseWriter};
use crate::listener::Stream;

pub struct HttpExchange {
    pub conn: Connection<Stream>,
    pub body: BodyReader,
    pub response: ResponseWriter,
    /// The request body turned out malformed (or the client went silent) while the guest read it.
    pub body_error: Option<HttpError>,
}

impl HttpExchange {
    pub fn new(conn: Connection<Stream>, request: &Request, body: BodyReader) -> Self {
        HttpExchange { conn, body, response: ResponseWriter::new(request), body_error: None }
    }
}

impl Exchange for HttpExchange {
    fn read_body(&mut self, max: usize) -> Result<Vec<u8>, String> {
        if let Some(err) = &self.body_error {
            return Err(err.to_string());
        }
        if self.response.is_on_the_wire() {
            self.body.forgo_continue();
        }
        self.body.read(&mut self.conn, max).map_err(|err| {
            let message = err.to_string();
            self.body_error = Some(err);
            message
        })
    }

    fn start_response(&mut self, status: &str, headers: Vec<(String, String)>) -> Result<(), String> {
        self.response.start(status, headers)
    }

    fn write_body(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.response.write(&mut self.conn, chunk)
    }
}
