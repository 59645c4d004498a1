"""wasmcorn's Python SDK: runs any PEP 3333 (WSGI) callable as a wasmcorn guest.

`wasmcorn build python MODULE:CALLABLE` packages an app with this package and a small generated module that
calls `guest.world_for(app)`; nothing here needs to be imported by the app itself. The pieces:

- `bridge`: one request through a WSGI callable (environ, `start_response`, `write`, the iterable), against any
  object with the three host calls (`read_body`, `start_response`, `write_body`).
- `wsgi_input`: `wsgi.input`, a file object streaming the request body from the host.
- `guest`: the host calls of the `app` world of wit/wasmcorn.wit, and the `WitWorld` class the component exports.
- `warmup`: requests run at build time, so that the app's lazy imports and caches land in the snapshot.
- `no_tls`: a stand-in `ssl` module for packages that import `ssl` but need it only for TLS (pg8000); apps call
  `no_tls.install()` before importing them.
"""

from .bridge import serve

__all__ = ["serve"]
