//! What the log says about a guest that failed: the cause and the wasm backtrace, one frame a line, in
//! wasmtime's own layout. Module and function names (and, with `WASMTIME_BACKTRACE_DETAILS`, source files) come
//! from the guest's custom sections, which the guest chose: each is cut to `NAME_MOST` bytes and escaped
//! (`log::escape`), so that no name can break its line, forge a log line of its own, or make the worker copy
//! megabytes of it per frame before the log's line limit cuts the text.

use std::fmt::Write as _;

use wasmtime::{FrameInfo, WasmBacktrace};

use crate::log::{escape, prefix};

/// The most bytes of a name (module, function, source file) a backtrace shows; the rest is counted.
const NAME_MOST: usize = 256;

/// The cause of a guest's failure and its wasm backtrace, without the host's own stack, which says nothing
/// about the guest. Every line of the text is one the host wrote; guest-chosen text never adds a line.
pub(crate) fn describe(err: &wasmtime::Error) -> String {
    let Some(backtrace) = err.downcast_ref::<WasmBacktrace>() else {
        return escape(&format!("{err:#}")).into_owned();
    };
    let mut text = escape(&err.root_cause().to_string()).into_owned();
    text.push_str("\nerror while executing at wasm backtrace:");
    for (index, frame) in backtrace.frames().iter().enumerate() {
        let _ = write!(text, "\n  {index:>3}: ");
        if let Some(offset) = frame.module_offset() {
            let _ = write!(text, "{offset:#8x} - ");
        }
        write_frame(&mut text, frame);
    }
    text
}

/// One frame: `module!function`, or its source symbols when the debug details are on.
fn write_frame(text: &mut String, frame: &FrameInfo) {
    if frame.symbols().is_empty() {
        let module = frame.module().name().unwrap_or("<unknown>");
        let _ = write!(text, "{}!{}", bounded(module), function_name(frame.func_name(), frame.func_index()));
        return;
    }
    for (position, symbol) in frame.symbols().iter().enumerate() {
        if position > 0 {
            text.push_str("\n                - ");
        }
        match symbol.name() {
            Some(name) => text.push_str(&function_name(Some(name), frame.func_index())),
            None if position == 0 => text.push_str(&function_name(frame.func_name(), frame.func_index())),
            None => text.push_str("<inlined function>"),
        }
        if let Some(file) = symbol.file() {
            let _ = write!(text, "\n                    at {}", bounded(file));
            if let Some(line) = symbol.line() {
                let _ = write!(text, ":{line}");
                if let Some(column) = symbol.column() {
                    let _ = write!(text, ":{column}");
                }
            }
        }
    }
}

/// A function's name as wasmtime shows it (demangled, or `<wasm function N>`), at most `NAME_MOST` bytes of it
/// (a cut name is shown as it is, not demangled), escaped.
fn function_name(name: Option<&str>, index: u32) -> String {
    if let Some(name) = name.filter(|name| name.len() > NAME_MOST) {
        return bounded(name);
    }
    let mut shown = String::new();
    let _ = wasmtime_environ::demangle_function_name_or_index(&mut shown, name, index as usize);
    bounded(&shown)
}

/// `name`'s first `NAME_MOST` bytes, escaped, and how many were cut.
fn bounded(name: &str) -> String {
    let kept = prefix(name, NAME_MOST);
    let mut shown = escape(kept).into_owned();
    if kept.len() < name.len() {
        let _ = write!(shown, "[{} bytes cut]", name.len() - kept.len());
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_name_is_demangled_and_stays_on_its_line() {
        assert_eq!(
            function_name(Some("_ZN4core9panicking5panic17h0123456789abcdefE"), 3),
            "core::panicking::panic::h0123456789abcdef"
        );
        assert_eq!(function_name(None, 7), "<wasm function 7>");
        assert_eq!(
            function_name(Some("trap\n[2026-01-01 00:00:00 +0000] [1] [CRITICAL] forged"), 1),
            "trap\\n[2026-01-01 00:00:00 +0000] [1] [CRITICAL] forged"
        );
    }

    #[test]
    fn a_long_name_is_cut_before_it_is_escaped() {
        let name = "\u{1}".repeat(1 << 20);
        let shown = function_name(Some(&name), 1);
        assert_eq!(shown, format!("{}[{} bytes cut]", "\\u{1}".repeat(NAME_MOST), (1 << 20) - NAME_MOST));
        assert_eq!(bounded(&"é".repeat(200)), format!("{}[144 bytes cut]", "é".repeat(128)));
    }
}
