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

#[cfg(test)]
mod tests {
    use wasmtime::Engine;
    use wasmtime::component::Component;

    use super::find;
    use crate::guest::engine::{HandlerForm, engine_config, instance_pre};
    use crate::guest::runtime::imports_random;

    /// `sample:hello` is the guest of the micro-benchmark's fresh instance: built without Rust's `std` and
    /// returning its response, it imports nothing, so it is one core module with one table (its own), where a
    /// guest that imports the response interface (`echo`) carries a second module and table to link it; its
    /// memory is one wasm page (its stack, data and first heap).
    #[test]
    fn the_hello_sample_imports_nothing_and_starts_with_one_page_and_one_table() {
        let engine = Engine::new(&engine_config(128 << 20, true, 0, 0)).unwrap();
        let component = |name: &str| Component::new(&engine, find(name).unwrap().wasm).unwrap();
        let hello = component("hello");
        assert_eq!(hello.component_type().imports(&engine).count(), 0);
        let needs = hello.resources_required().unwrap();
        assert_eq!((needs.max_initial_memory_size, needs.num_tables), (Some(1), 1));
        assert_eq!(component("echo").resources_required().unwrap().num_tables, 2);
    }

    /// Only an app that imports `wasi:random` gets new generators for each instance (see `guest::instance`).
    #[test]
    fn an_app_reads_random_only_when_it_imports_wasi_random() {
        let engine = Engine::new(&engine_config(128 << 20, true, 0, 0)).unwrap();
        let component = |name: &str| Component::new(&engine, find(name).unwrap().wasm).unwrap();
        assert!(!imports_random(&engine, &component("hello")));
        // Rust's `std` seeds its hash maps from `wasi:random/insecure-seed`.
        assert!(imports_random(&engine, &component("echo")));
    }

    /// `sample:hello` exports `respond` (the `returning-app` world) and is called without its environ, as is
    /// `sample:echo`, which exports `handle-request` (the `lazy-app` world) and asks for it (it imports
    /// `wasmcorn:app/request`); `sample:workload` exports `handle` and is given it.
    #[test]
    fn each_sample_is_called_through_its_own_handler() {
        let engine = Engine::new(&engine_config(128 << 20, true, 0, 0)).unwrap();
        let entry = |name: &str| {
            let component = Component::new(&engine, find(name).unwrap().wasm).unwrap();
            let entry = instance_pre::<crate::guest::artefact::NoExchange>(&engine, &component).unwrap();
            (entry.form, entry.may_ask_environ, entry.reads_environ())
        };
        // Nor does hello import `wasmcorn:app/request`: it cannot ask, so its worker builds no environ for it.
        assert_eq!(entry("hello"), (HandlerForm::ReturnsResponse, false, false));
        assert_eq!(entry("echo"), (HandlerForm::AsksForEnviron, true, true));
        assert_eq!(entry("workload"), (HandlerForm::GivenEnviron, false, true));
    }
}
