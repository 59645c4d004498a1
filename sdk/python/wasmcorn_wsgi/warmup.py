"""Warm-up requests, run at build time while componentize-py pre-initialises the interpreter: whatever the app
imports or caches while answering them is in the snapshot every request starts from."""

from urllib.parse import unquote

from .bridge import serve


class WarmupError(Exception):
    """A warm-up request failed (an exception, or a 5xx answer)."""


class RecordingHost:
    """A host with an empty request body that keeps the status and counts the body bytes."""

    def __init__(self):
        self.status = None
        self.body_bytes = 0

    def read_body(self, max):
        return b""

    def start_response(self, status, headers):
        self.status = status

    def write_body(self, chunk):
        self.body_bytes += len(chunk)


def environ_for(path):
    """The environ of `GET path` from 127.0.0.1, as the host gives it: PATH_INFO percent-decoded (bytes that are
    not UTF-8 replaced), the query string as written."""
    path_info, _, query = path.partition("?")
    return [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", unquote(path_info, errors="replace")),
        ("QUERY_STRING", query),
        ("RAW_URI", path),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_SOFTWARE", "wasmcorn-build"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", ""),
        ("HTTP_HOST", "localhost"),
        ("wsgi.url_scheme", "http"),
    ]


def warm_up(app, paths):
    """Runs `GET path` through `app` for each path; raises `WarmupError` for one that fails."""
    for path in paths:
        host = RecordingHost()
        try:
            serve(app, environ_for(path), host)
        except Exception as exc:
            raise WarmupError(f"warm-up request GET {path} raised {type(exc).__name__}: {exc}") from exc
        code = (host.status or "").split(" ", 1)[0]
        if not code.isdigit() or int(code) >= 500:
            raise WarmupError(f"warm-up request GET {path} answered {host.status!r}")
