"""The component's side of the `app` world (wit/wasmcorn.wit): the host calls, and the exported handler.

`world_for(app)` returns the `WitWorld` class componentize-py exports: its `handle` runs one request through the
bridge. An exception before the response started gives the host an error (it answers 500 and logs the message),
after it started the host cuts the connection; either way the traceback goes to stderr, which is the server's log.
"""

import sys
import traceback

import wit_world
from componentize_py_types import Err
from wit_world.imports import request, response

from .bridge import serve


class WitHost:
    """The host calls of the `app` world."""

    read_body = staticmethod(request.read_body)
    start_response = staticmethod(response.start_response)
    write_body = staticmethod(response.write_body)


def world_for(app):
    """The exported `WitWorld` class for the WSGI callable `app`."""

    class WitWorld(wit_world.WitWorld):
        def handle(self, environ):
            try:
                serve(app, environ, WitHost)
            except Err:
                # The host refused a call (a bad header, a client gone): it knows why, and says so.
                raise
            except BaseException as exc:
                traceback.print_exc(file=sys.stderr)
                sys.stderr.flush()
                raise Err(f"{type(exc).__name__}: {exc}") from None

    return WitWorld
