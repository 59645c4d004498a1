//! The sample guests embedded in the binary, served as `sample:NAME`. They are built from `guest-apps/` by
//! the host's build script.

/// One embedded sample.
pub(super) struct Sample {
    pub name: &'static str,
    pub wasm: &'static [u8],
}

/// Every embedded sample.
pub(super) const SAMPLES: &[Sample] = &[
    Sample { name: "hello", wasm: include_bytes!(env!("WASMCORN_GUEST_HELLO")) },
    Sample { name: "echo", wasm: include_bytes!(env!("WASMCORN_GUEST_ECHO")) },
    Sample { name: "workload", wasm: include_bytes!(env!("WASMCORN_GUEST_WORKLOAD")) },
    // The same hello as a standard wasi:http component.
    Sample { name: "proxy-hello", wasm: include_bytes!(env!("WASMCORN_GUEST_PROXY_HELLO")) },
];

pub(super) fn find(name: &str) -> Option<&'static Sample> {
    SAMPLES.iter().find(|sample| sample.name == name)
}
