"""One request through a WSGI callable (PEP 3333), against a host that reads the body and sends the response.

A host is any object with `read_body(max) -> bytes`, `start_response(status, headers)` and `write_body(chunk)`
(the `app` world's calls in a component, a recording host during warm-up). `serve` builds the environ, gives the
app `start_response` (with `exc_info` semantics) and its `write()` callable, sends the status and headers with the
first non-empty chunk of the body (or at the end, for an empty body), and always calls the iterable's `close()`.
Any exception escapes `serve`: the caller turns it into an error answer (a 500 before the response started; once
it has started, the host cuts the connection).
"""

import sys

from .wsgi_input import WsgiInput

# CGI variables that the host sends empty when the request has none, and which PEP 3333 then wants absent.
_ABSENT_WHEN_EMPTY = ("CONTENT_TYPE", "CONTENT_LENGTH")


def native(value):
    """A host string as PEP 3333's "native string": its UTF-8 bytes, decoded as Latin-1."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("latin-1")


def from_native(value):
    """A header value from the app (bytes as Latin-1) as the text whose UTF-8 bytes the host sends."""
    if value.isascii():
        return value
    return value.encode("latin-1").decode("utf-8", "replace")


def build_environ(pairs, read_body, errors=None):
    """The WSGI environ for the host's (name, value) pairs, with every `wsgi.*` key."""
    environ = {}
    for name, value in pairs:
        environ[name] = native(value)
    for name in _ABSENT_WHEN_EMPTY:
        if environ.get(name) == "":
            del environ[name]
    environ.setdefault("SCRIPT_NAME", "")
    environ.setdefault("PATH_INFO", "")
    environ.setdefault("QUERY_STRING", "")
    length = environ.get("CONTENT_LENGTH")
    content_length = int(length) if length is not None and length.isdigit() else None
    scheme = environ.get("wsgi.url_scheme")
    environ["wsgi.version"] = (1, 0)
    environ["wsgi.url_scheme"] = scheme if scheme in ("http", "https") else "http"
    environ["wsgi.input"] = WsgiInput(read_body, content_length)
    if content_length is None:
        # A chunked body: the host decodes it and ends the stream where it ends, so reading to EOF is safe.
        # (With a length, frameworks then read through it with read(n), as PEP 3333 and wsgiref.validate want.)
        environ["wsgi.input_terminated"] = True
    environ["wsgi.errors"] = errors if errors is not None else sys.stderr
    environ["wsgi.multithread"] = False
    environ["wsgi.multiprocess"] = True
    environ["wsgi.run_once"] = False
    return environ


class Response:
    """The response side of one request: `start_response`, `write`, and the head sent with the first bytes."""

    def __init__(self, host):
        self._host = host
        self.status = None
        self.headers = None
        self.head_sent = False

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.head_sent:
                    # Too late to change the status: re-raise, and the caller cuts the connection.
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response was called twice without exc_info")
        if type(status) is not str:
            raise TypeError(f"the status must be a str, not {type(status).__name__}")
        if type(headers) is not list:
            raise TypeError(f"the headers must be a list, not {type(headers).__name__}")
        for header in headers:
            if type(header) is not tuple or len(header) != 2:
                raise TypeError(f"a header must be a (name, value) tuple, not {header!r}")
            if type(header[0]) is not str or type(header[1]) is not str:
                raise TypeError(f"a header's name and value must be str: {header!r}")
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data):
        if self.status is None:
            raise AssertionError("write() was called before start_response")
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"the body must be bytes, not {type(data).__name__}")
            data = bytes(data)
        if data:
            self.send_head()
            self._host.write_body(data)

    def send_head(self):
        if not self.head_sent:
            self.head_sent = True
            headers = [(from_native(name), from_native(value)) for name, value in self.headers]
            self._host.start_response(from_native(self.status), headers)

    def finish(self):
        if self.status is None:
            raise AssertionError("the app returned without calling start_response")
        self.send_head()


def serve(app, pairs, host, errors=None):
    """Runs `app` for the request whose environ is `pairs`, through `host`. Returns the `Response`."""
    environ = build_environ(pairs, host.read_body, errors)
    response = Response(host)
    result = app(environ, response.start_response)
    try:
        write = response.write
        for chunk in result:
            write(chunk)
        response.finish()
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return response
