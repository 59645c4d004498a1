"""Needs ujson, a C extension without a pure-Python fallback: `wasmcorn build python` must refuse it."""

import ujson


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [ujson.dumps({"ok": True}).encode()]
