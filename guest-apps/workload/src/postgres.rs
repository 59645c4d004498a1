//! A very small PostgreSQL client (wire protocol 3.0) for the workload's IO part: connect over `wasi:sockets`
//! (Rust's `std::net::TcpStream`), start up, authenticate (trust, cleartext password or MD5; any other method is
//! an error naming it), run one simple query, read until the server is ready again, and say goodbye.
//!
//! See <https://www.postgresql.org/docs/current/protocol-flow.html> for the messages used here.

use std::io::{Read, Write};
use std::net::TcpStream;

use md5::{Digest, Md5};
use percent_encoding::percent_decode_str;

/// The protocol version sent in the startup message: 3.0.
const PROTOCOL_VERSION: i32 = 196_608;
/// The largest message this client accepts from the server.
const MAX_MESSAGE: usize = 1 << 20;

/// Where to connect and as whom, from `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`.
struct Target {
    user: String,
    password: Option<String>,
    host: String,
    port: u16,
    database: String,
}

impl Target {
    fn parse(text: &str) -> Result<Target, String> {
        let url = url::Url::parse(text).map_err(|err| format!("DATABASE_URL is not a URL ({err})"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!("DATABASE_URL must start with postgres://, not {}://", url.scheme()));
        }
        let decode = |part: &str| percent_decode_str(part).decode_utf8_lossy().into_owned();
        let user = decode(url.username());
        if user.is_empty() {
            return Err("DATABASE_URL names no user (postgres://USER@HOST:PORT/DATABASE)".into());
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(address)) => address.to_string(),
            Some(host) => host.to_string(),
            None => return Err("DATABASE_URL names no host".into()),
        };
        let database = decode(url.path().trim_start_matches('/'));
        Ok(Target {
            database: if database.is_empty() { user.clone() } else { database },
            password: url.password().map(decode),
            port: url.port().unwrap_or(5432),
            host,
            user,
        })
    }
}

/// Runs `SELECT pg_sleep(seconds)` on the database at `url`.
pub fn sleep(url: &str, seconds: f64) -> Result<(), String> {
    let target = Target::parse(url)?;
    let mut connection = Connection::open(&target)?;
    connection.query(&format!("SELECT pg_sleep({seconds})"))?;
    connection.terminate();
    Ok(())
}

/// One backend message: its type byte and its payload.
struct Message {
    kind: u8,
    body: Vec<u8>,
}

struct Connection {
    stream: TcpStream,
    server: String,
}

impl Connection {
    /// Connects, sends the startup message and authenticates; returns once the server is ready for a query.
    fn open(target: &Target) -> Result<Connection, String> {
        let server = format!("PostgreSQL at {}:{}", target.host, target.port);
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .map_err(|err| format!("cannot connect to {server}: {err}"))?;
        let mut connection = Connection { stream, server };
        let mut startup = Vec::new();
        startup.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        for (key, value) in [("user", &target.user), ("database", &target.database)] {
            push_cstring(&mut startup, key);
            push_cstring(&mut startup, value);
        }
        startup.push(0);
        connection.send(None, &startup)?;
        connection.authenticate(target)?;
        connection.wait_until_ready()
    }

    fn authenticate(&mut self, target: &Target) -> Result<(), String> {
        loop {
            let message = self.receive()?;
            match message.kind {
                b'R' => {
                    let code = read_i32(&message.body, 0)?;
                    match code {
                        0 => return Ok(()),
                        3 => {
                            let password = self.password(target, "password")?;
                            self.send_password(&password)?;
                        }
                        5 => {
                            let salt = message.body.get(4..8).ok_or("a truncated MD5 request")?;
                            let password = self.password(target, "md5")?;
                            let inner = hex_md5(&[password.as_bytes(), target.user.as_bytes()]);
                            let outer = hex_md5(&[inner.as_bytes(), salt]);
                            self.send_password(&format!("md5{outer}"))?;
                        }
                        other => {
                            return Err(format!(
                                "{} asks for {} authentication, which this client does not support (it speaks \
                                 trust, password and md5)",
                                self.server,
                                method_name(other)
                            ));
                        }
                    }
                }
                b'E' => return Err(self.server_error(&message.body)),
                _ => return Err(format!("{} sent an unexpected message {:?}", self.server, message.kind as char)),
            }
        }
    }

    fn password(&self, target: &Target, method: &str) -> Result<String, String> {
        target
            .password
            .clone()
            .ok_or_else(|| format!("{} asks for a password ({method}) and DATABASE_URL has none", self.server))
    }

    fn send_password(&mut self, password: &str) -> Result<(), String> {
        let mut body = Vec::new();
        push_cstring(&mut body, password);
        self.send(Some(b'p'), &body)
    }

    /// Reads until ReadyForQuery. An ErrorResponse during startup is fatal: the server closes the connection.
    fn wait_until_ready(mut self) -> Result<Connection, String> {
        loop {
            let message = self.receive()?;
            match message.kind {
                b'Z' => return Ok(self),
                b'E' => return Err(self.server_error(&message.body)),
                _ => {}
            }
        }
    }

    /// Runs a simple query and reads until the server is ready again.
    fn query(&mut self, sql: &str) -> Result<(), String> {
        let mut body = Vec::new();
        push_cstring(&mut body, sql);
        self.send(Some(b'Q'), &body)?;
        let mut failure = None;
        loop {
            let message = self.receive()?;
            match message.kind {
                b'Z' => return failure.map_or(Ok(()), Err),
                b'E' => failure = Some(self.server_error(&message.body)),
                _ => {}
            }
        }
    }

    fn terminate(mut self) {
        // Best effort: the server cleans up when the connection closes anyway.
        let _ = self.send(Some(b'X'), &[]);
    }

    fn send(&mut self, kind: Option<u8>, body: &[u8]) -> Result<(), String> {
        let length = i32::try_from(body.len() + 4).map_err(|_| "a message too large to send".to_string())?;
        let mut bytes = Vec::with_capacity(body.len() + 5);
        bytes.extend(kind);
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).map_err(|err| format!("cannot write to {}: {err}", self.server))
    }

    fn receive(&mut self) -> Result<Message, String> {
        let mut header = [0u8; 5];
        self.stream.read_exact(&mut header).map_err(|err| format!("cannot read from {}: {err}", self.server))?;
        let length = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let length = usize::try_from(length)
            .ok()
            .and_then(|length| length.checked_sub(4))
            .filter(|length| *length <= MAX_MESSAGE)
            .ok_or_else(|| format!("{} sent a message of invalid length {length}", self.server))?;
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).map_err(|err| format!("cannot read from {}: {err}", self.server))?;
        Ok(Message { kind: header[0], body })
    }

    /// The text of an ErrorResponse: severity, SQLSTATE and message.
    fn server_error(&self, body: &[u8]) -> String {
        let mut severity = "ERROR".to_string();
        let mut code = String::new();
        let mut text = String::new();
        for field in body.split(|byte| *byte == 0) {
            let Some((&kind, value)) = field.split_first() else { continue };
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'S' => severity = value,
                b'C' => code = value,
                b'M' => text = value,
                _ => {}
            }
        }
        format!("{} answered {severity} {code}: {text}", self.server)
    }
}

fn push_cstring(bytes: &mut Vec<u8>, text: &str) {
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(0);
}

fn read_i32(body: &[u8], at: usize) -> Result<i32, String> {
    let bytes = body.get(at..at + 4).ok_or("a truncated message from the server")?;
    Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn hex_md5(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The name of an authentication request code (see the `AuthenticationXXX` messages).
fn method_name(code: i32) -> String {
    match code {
        2 => "KerberosV5".into(),
        6 => "SCM credential".into(),
        7 | 8 => "GSSAPI".into(),
        9 => "SSPI".into(),
        10..=12 => "SASL (SCRAM-SHA-256)".into(),
        other => format!("an unknown method (code {other})"),
    }
}
