"""A standard wasi:http proxy component written in Python and built by componentize-py (from PyPI), with no
wasmcorn API at all: it answers `Hello from Python at PATH` and prints one line to stdout per request.

Build (the end-to-end test `proxy::component_built_by_componentize_py_is_served` does this):
    componentize-py -d wit -w app componentize app -o proxy_python.wasm
"""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        print(f"python saw {path}")
        body = f"Hello from Python at {path}".encode()
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        outgoing = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        stream = outgoing.write()
        stream.blocking_write_and_flush(body)
        stream.__exit__(None, None, None)
        OutgoingBody.finish(outgoing, None)
