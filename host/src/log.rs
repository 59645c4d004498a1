//! The error log and the access log. Each goes to stderr or to a file (opened for appending, reopened on
//! SIGUSR1), every line written with a single `write` so that lines from the arbiter and every worker never
//! interleave. The error log uses Gunicorn's line format `[2026-11-26 09:19:31 +0000] [PID] [LEVEL] message`;
//! the access log Gunicorn's atoms (`log::access`). Text a guest chose (its error messages, its function names,
//! its output) is logged through `escape`, so that it never starts a line of its own.

mod access;
mod settings;
mod sink;

use std::borrow::Cow;
use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU8, Ordering};

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

pub(crate) use access::AccessRecord;
pub(crate) use settings::{Level, Settings};
pub(crate) use sink::RECORD_MAX;

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Opens the log files and applies the level. Until then everything goes to stderr at level info.
pub(crate) fn init(settings: &Settings) -> anyhow::Result<()> {
    LEVEL.store(settings.level as u8, Ordering::Relaxed);
    sink::init(settings)
}

/// Reopens the log files (after a rotation moved them away); false, and said in the log, if that failed.
pub(crate) fn reopen() -> bool {
    match sink::reopen() {
        Ok(()) => true,
        Err(err) => {
            error(format_args!("cannot reopen the log files: {err:#}"));
            false
        }
    }
}

/// Writes one error-log line. A message of several lines (a backtrace) is written as one block.
pub(crate) fn write(level: Level, message: impl Display) {
    if (level as u8) < LEVEL.load(Ordering::Relaxed) {
        return;
    }
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S %z");
    let line = format!("[{now}] [{}] [{}] {message}\n", std::process::id(), level.name());
    sink::write_error(&line);
}

pub(crate) fn info(message: impl Display) {
    write(Level::Info, message);
}

pub(crate) fn warning(message: impl Display) {
    write(Level::Warning, message);
}

pub(crate) fn error(message: impl Display) {
    write(Level::Error, message);
}

pub(crate) fn critical(message: impl Display) {
    write(Level::Critical, message);
}

/// A line the guest wrote to its stdout or stderr.
pub(crate) fn guest_line(stream: &str, line: &str) {
    write(Level::Info, format_args!("[guest {stream}] {}", escape(line)));
}

/// `text` with every control character (CR, LF, tab and the rest of C0, DEL, C1), the Unicode line and
/// paragraph separators and every invisible format character (bidi controls such as U+202E, zero-width marks,
/// U+FEFF: general category Cf) written as an escape (`\n`, `\r`, `\t`, `\u{1b}`, `\u{202e}`), so that text
/// from a guest stays on the line it is logged on, cannot forge one, and cannot reorder or hide what a terminal
/// shows of it. A backslash is doubled, so that an escape the guest wrote as text (`\n`) cannot pass for one of
/// these.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(|c| c == '\\' || breaks_out(c)) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if breaks_out(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Whether `c` could break a log line out of its place or hide part of it: a control character, a line or
/// paragraph separator, an invisible format character.
fn breaks_out(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || (!c.is_ascii() && c.general_category() == GeneralCategory::Format)
}

/// The longest start of `text` of at most `bytes` bytes that ends at a character boundary.
pub(crate) fn prefix(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Writes one access-log line.
pub(crate) fn access(record: &AccessRecord<'_>) {
    sink::write_access(|format| format.render(record));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_cannot_break_a_line() {
        assert_eq!(escape("plain text, with \"quotes\" and ü"), "plain text, with \"quotes\" and ü");
        assert_eq!(
            escape("oops\n[2026-01-01 00:00:00 +0000] [1] [CRITICAL] forged\r\t\u{1b}[2J\u{7f}\u{85}\u{2028}"),
            "oops\\n[2026-01-01 00:00:00 +0000] [1] [CRITICAL] forged\\r\\t\\u{1b}[2J\\u{7f}\\u{85}\\u{2028}"
        );
        assert!(matches!(escape("nothing to do"), Cow::Borrowed(_)));
        // Written as text, an escape stays text: no one reading the log can take it for a line break.
        assert_eq!(escape("a\\nb\nc\\"), "a\\\\nb\\nc\\\\");
    }

    #[test]
    fn guest_text_cannot_reorder_or_hide_what_a_terminal_shows() {
        // Bidi overrides and isolates, a byte-order mark, zero-width marks, a tag character: escaped; printable
        // text in any script, combining accents and a no-break space: kept.
        assert_eq!(
            escape("bidi\u{202e}DESREVER\u{202c}end\u{feff}bom\u{2066}iso\u{2069}\u{200b}\u{200f}\u{e0041}"),
            "bidi\\u{202e}DESREVER\\u{202c}end\\u{feff}bom\\u{2066}iso\\u{2069}\\u{200b}\\u{200f}\\u{e0041}"
        );
        assert!(matches!(escape("d\u{e9}j\u{e0} vu, \u{65e5}\u{672c}, e\u{301}\u{a0}\u{5d0}"), Cow::Borrowed(_)));
    }
}
