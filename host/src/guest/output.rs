//! Captures a guest's stdout and stderr and hands them to the log line by line, within a byte budget per request
//! so that a guest cannot flood the log. An instance serving several requests keeps its streams (the guest may
//! hold their handles); each request's end logs what is left of its output and refills the budget.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Where complete lines of guest output go: (stream name, line).
pub type GuestLine = fn(&str, &str);

/// What a line break costs of the budget: about what the log line around a guest's line takes (time, pid, level,
/// stream name), so that a guest writing empty lines cannot make the log many times its budget.
const LINE_COST: usize = 64;

/// One of a request's output streams. Clones share the same buffer.
#[derive(Clone)]
pub(super) struct GuestOutput {
    inner: Arc<Mutex<LineBuffer>>,
}

struct LineBuffer {
    stream: Arc<str>,
    partial: Vec<u8>,
    /// What the current request may still write.
    budget: usize,
    /// What each request may write.
    per_request: usize,
    dropped: usize,
    log_line: GuestLine,
}

impl GuestOutput {
    pub(super) fn new(stream: Arc<str>, budget: usize, log_line: GuestLine) -> Self {
        let buffer = LineBuffer { stream, partial: Vec::new(), budget, per_request: budget, dropped: 0, log_line };
        GuestOutput { inner: Arc::new(Mutex::new(buffer)) }
    }

    fn push(&self, bytes: &[u8]) {
        if let Ok(mut buffer) = self.inner.lock() {
            buffer.push(bytes);
        }
    }

    /// Logs what is left of an unfinished line and how much was dropped, and refills the budget for the next
    /// request. Call it when a request ends.
    pub(super) fn finish(&self) {
        if let Ok(mut buffer) = self.inner.lock() {
            buffer.finish();
        }
    }
}

impl LineBuffer {
    /// Takes `bytes` into the current line, logging each line they complete, while the budget lasts: each byte
    /// costs one, and each line break `LINE_COST` (the log line it starts costs that much more than its text).
    /// What the budget cannot pay for is counted as dropped.
    fn push(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let line_end = rest.iter().position(|&byte| byte == b'\n');
            let text = &rest[..line_end.unwrap_or(rest.len())];
            let kept = text.len().min(self.budget);
            self.budget -= kept;
            self.partial.extend_from_slice(&text[..kept]);
            if kept < text.len() || (line_end.is_some() && self.budget < LINE_COST) {
                self.budget = 0;
                self.dropped += rest.len() - kept;
                return;
            }
            let Some(end) = line_end else { return };
            self.budget -= LINE_COST;
            self.emit();
            rest = &rest[end + 1..];
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial);
        (self.log_line)(&self.stream, line.trim_end_matches('\r'));
        self.partial.clear();
    }

    fn finish(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
        if self.dropped > 0 {
            let note = format!("[{} more bytes dropped: the request's output budget is spent]", self.dropped);
            (self.log_line)(&self.stream, &note);
            self.dropped = 0;
        }
        self.budget = self.per_request;
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, bytes: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    static LINES: StdMutex<Vec<String>> = StdMutex::new(Vec::new());

    fn record(stream: &str, line: &str) {
        LINES.lock().unwrap().push(format!("{stream}: {line}"));
    }

    fn recorded(stream: &str) -> Vec<String> {
        let prefix = format!("{stream}: ");
        LINES.lock().unwrap().iter().filter_map(|line| line.strip_prefix(&prefix).map(str::to_string)).collect()
    }

    #[test]
    fn output_is_split_into_lines_within_the_budget() {
        // Room for "one" and "two\r" (each with its line break), and 7 bytes more.
        let output = GuestOutput::new("stdout".into(), 3 + 4 + 2 * LINE_COST + 7, record);
        output.push(b"one\ntw");
        output.push(b"o\r\nthree and more than the budget\n");
        output.finish();
        output.push(b"next request\n");
        output.finish();
        assert_eq!(
            recorded("stdout"),
            vec![
                "one".to_string(),
                "two".to_string(),
                "three a".to_string(),
                "[24 more bytes dropped: the request's output budget is spent]".to_string(),
                "next request".to_string(),
            ]
        );
    }

    #[test]
    fn empty_lines_cost_what_their_log_lines_cost() {
        let budget = 10 * LINE_COST;
        let output = GuestOutput::new("stderr".into(), budget, record);
        output.push(&vec![b'\n'; budget]);
        output.finish();
        let lines = recorded("stderr");
        assert_eq!(lines.len(), 11, "10 empty lines and the note: {lines:?}");
        assert!(lines[..10].iter().all(String::is_empty));
        assert_eq!(lines[10], format!("[{} more bytes dropped: the request's output budget is spent]", budget - 10));
    }
}
