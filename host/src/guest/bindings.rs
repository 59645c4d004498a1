//! Host bindings generated from `wit/wasmcorn.wit`: the `app` world, the `lazy-app` world (in `lazy`), which
//! imports the same interfaces, and the `returning-app` world (in `returning`), which imports `request` alone.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "app",
    // The calls that wait for the client trap when the guest's time runs out meanwhile.
    imports: {
        "wasmcorn:app/request.read-body": trappable,
        "wasmcorn:app/response.write-body": trappable,
    },
});

pub(super) mod lazy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "lazy-app",
        with: {
            "wasmcorn:app/request": super::wasmcorn::app::request,
            "wasmcorn:app/response": super::wasmcorn::app::response,
        },
    });
}

pub(super) mod returning {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "returning-app",
        with: {
            "wasmcorn:app/request": super::wasmcorn::app::request,
        },
    });
}
