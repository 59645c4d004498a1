//! Host bindings generated from `wit/wasmcorn.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "app",
    // The calls that wait for the client trap when the guest's time runs out meanwhile.
    imports: {
        "wasmcorn:app/request.read-body": trappable,
        "wasmcorn:app/response.write-body": trappable,
    },
});
