//! Says which limit a component that does not fit the pooling allocator crossed, in the operator's terms: the
//! whole cause chain wasmtime gives (its first line alone only says "does not fit"), and the setting to change.

/// The compile error of the component `what`, with its causes and, for a limit the operator sets, the flag to
/// raise: a component that does not fit is valid, and the message says so.
pub(super) fn explain(what: &str, err: &wasmtime::Error) -> String {
    let text = format!("{err:#}");
    if text.contains("memory has a minimum byte size") {
        let hint = "its initial memory is larger than --max-memory, per app `max_memory`: raise it";
        format!("{what} needs more memory than it may have: {text} ({hint})")
    } else if text.contains("pooling allocator") {
        let hint = "a limit sized for CPython components: see docs/python.md";
        format!("{what} does not fit wasmcorn's instance pool: {text} ({hint})")
    } else {
        format!("{what} is not a valid WebAssembly component: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_too_large_names_the_flag_and_the_numbers() {
        let err =
            wasmtime::Error::msg("memory has a minimum byte size of 20971520 which exceeds the limit of 8388608 bytes")
                .context("module memory does not fit in pooling allocator requirements");
        let text = explain("app.wasm", &err);
        assert!(text.starts_with("app.wasm needs more memory than it may have: "), "{text}");
        assert!(text.contains("20971520") && text.contains("8388608") && text.contains("--max-memory"), "{text}");
    }
}
