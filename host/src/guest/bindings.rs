//! Host bindings generated from `wit/wasmcorn.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "app",
});
