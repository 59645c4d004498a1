//! The error log and the access log. Both go to stderr, each line written with a single `write` so that lines
//! from the arbiter and every worker never interleave. The error log uses Gunicorn's line format
//! `[2026-11-26 09:19:31 +0000] [PID] [LEVEL] message`; the access log Gunicorn's default format
//! `%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"`.

use std::fmt::Display;
use std::io::Write;

/// How serious an error-log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

/// Writes one error-log line. A message of several lines (a backtrace) is written as one block.
pub fn write(level: Level, message: impl Display) {
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S %z");
    let line = format!("[{now}] [{}] [{}] {message}\n", std::process::id(), level.name());
    emit(line.as_bytes());
}

pub fn info(message: impl Display) {
    write(Level::Info, message);
}

pub fn warning(message: impl Display) {
    write(Level::Warning, message);
}

pub fn error(message: impl Display) {
    write(Level::Error, message);
}

pub fn critical(message: impl Display) {
    write(Level::Critical, message);
}

/// A line the guest wrote to its stdout or stderr.
pub fn guest_line(stream: &str, line: &str) {
    write(Level::Info, format_args!("[guest {stream}] {line}"));
}

/// What the access log says about one request.
pub struct AccessRecord<'a> {
    pub remote_addr: &'a str,
    /// The request line, as `GET /path?query HTTP/1.1`.
    pub request_line: &'a str,
    pub status: u16,
    /// Body bytes sent.
    pub body_bytes: u64,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// Writes one access-log line in Gunicorn's default format.
pub fn access(record: &AccessRecord<'_>) {
    let now = chrono::Local::now().format("%d/%b/%Y:%H:%M:%S %z");
    let bytes = if record.body_bytes == 0 { "-".to_string() } else { record.body_bytes.to_string() };
    let line = format!(
        "{} - - [{now}] \"{}\" {} {bytes} \"{}\" \"{}\"\n",
        record.remote_addr,
        escape(record.request_line),
        record.status,
        escape(record.referer.unwrap_or("-")),
        escape(record.user_agent.unwrap_or("-")),
    );
    emit(line.as_bytes());
}

/// Keeps a client's text from forging log lines: quotes, backslashes and control bytes are escaped.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if c.is_control() => escaped.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    escaped
}

fn emit(bytes: &[u8]) {
    // Nothing sensible can be done when stderr itself fails; the server keeps serving.
    let _ = std::io::stderr().write_all(bytes);
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_neutralises_quotes_and_control_bytes() {
        assert_eq!(escape("a\"b\\c\nd\u{7f}"), "a\\\"b\\\\c\\x0ad\\x7f");
        assert_eq!(escape("curl/8.0 (é)"), "curl/8.0 (é)");
    }
}
