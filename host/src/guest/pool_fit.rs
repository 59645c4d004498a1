//! Says which limit a component that does not fit the pooling allocator crossed, in the operator's terms: the
//! whole cause chain wasmtime gives (its first line alone only says "does not fit"), and the setting to change.

/// The compile error of a component, with its causes and, for a limit the operator sets, the flag to raise.
pub(super) fn explain(err: &wasmtime::Error) -> String {
    let text = format!("{err:#}");
    let hint = if text.contains("memory has a minimum byte size") {
        " (its initial memory is larger than --max-memory, per app `max_memory`: raise it)"
    } else if text.contains("pooling allocator") {
        " (a limit of wasmcorn's instance pool, sized for CPython components: see docs/python.md)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_too_large_names_the_flag_and_the_numbers() {
        let err =
            wasmtime::Error::msg("memory has a minimum byte size of 20971520 which exceeds the limit of 8388608 bytes")
                .context("module memory does not fit in pooling allocator requirements");
        let text = explain(&err);
        assert!(text.contains("20971520") && text.contains("8388608") && text.contains("--max-memory"), "{text}");
    }
}
