"""A framework-free WSGI app for the end-to-end tests, checked by wsgiref.validate (its warnings are errors).

Routes: `/` hello; `/query` the query string; `/environ` the CGI and wsgi.* keys as JSON; `/env?name=N` the
environment variable N; `/upload` (POST) streams the body with read(n) and answers its length and SHA-256;
`/lines` (POST) reads the body with readline() and iteration; `/stream?mib=N` N MiB in 64 KiB chunks;
`/write` answers through the write() callable; `/errors` writes to wsgi.errors; `/exc-info` replaces its
headers through start_response's exc_info; `/boom` raises before the response starts; `/boom-late` raises after
the first chunk; `/counter` a module-level counter (1 on a fresh interpreter); `/closing` logs when the
server calls its iterable's close().
"""

import hashlib
import json
import os
import sys
import warnings
from urllib.parse import parse_qs
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)

COUNTER = 0
PATTERN = bytes(range(256)) * 256  # 64 KiB


def answer(start_response, body, status="200 OK", content_type="text/plain"):
    body = body if isinstance(body, bytes) else body.encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def upload(environ, start_response):
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    length = 0
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        digest.update(piece)
        length += len(piece)
    body = json.dumps({"length": length, "sha256": digest.hexdigest()})
    return answer(start_response, body, content_type="application/json")


def lines(environ, start_response):
    stream = environ["wsgi.input"]
    first = stream.readline()
    rest = [line for line in stream]
    body = json.dumps({"first": first.decode(), "rest": [line.decode() for line in rest]})
    return answer(start_response, body, content_type="application/json")


def stream(environ, start_response):
    mib = int(parse_qs(environ["QUERY_STRING"]).get("mib", ["1"])[0])
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for _ in range(mib * 16):
        yield PATTERN


def boom_late(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"x" * (256 * 1024)
    raise RuntimeError("failed after the response started")


class Closing:
    def __init__(self, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

    def __iter__(self):
        yield b"closing"

    def close(self):
        print("plain_app: the iterable was closed", file=sys.stderr)


def exc_info(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("changed my mind")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"replaced"]


def plain(environ, start_response):
    global COUNTER
    path = environ["PATH_INFO"]
    if path == "/":
        return answer(start_response, "hello from plain WSGI")
    if path == "/query":
        return answer(start_response, json.dumps(parse_qs(environ["QUERY_STRING"])), content_type="application/json")
    if path == "/environ":
        shown = {key: value if isinstance(value, str) else type(value).__name__ for key, value in environ.items()}
        shown["wsgi.version"] = list(environ["wsgi.version"])
        for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
            shown[key] = environ.get(key)
        return answer(start_response, json.dumps(shown), content_type="application/json")
    if path == "/env":
        name = parse_qs(environ["QUERY_STRING"])["name"][0]
        return answer(start_response, os.environ.get(name, "<unset>"))
    if path == "/upload":
        return upload(environ, start_response)
    if path == "/lines":
        return lines(environ, start_response)
    if path == "/stream":
        return stream(environ, start_response)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written, ")
        return [b"then returned"]
    if path == "/errors":
        environ["wsgi.errors"].write("plain_app: hello on wsgi.errors\n")
        return answer(start_response, "logged")
    if path == "/exc-info":
        return exc_info(environ, start_response)
    if path == "/boom":
        return 1 // 0
    if path == "/boom-late":
        return boom_late(environ, start_response)
    if path == "/counter":
        COUNTER += 1
        return answer(start_response, str(COUNTER))
    if path == "/closing":
        return Closing(start_response)
    return answer(start_response, "no such page", status="404 Not Found")


application = validator(plain)
