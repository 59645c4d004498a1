"""A WSGI app that queries PostgreSQL with pg8000, a pure-Python driver, over the sandbox's sockets
(`wasi:sockets`, granted with `--allow-net HOST:PORT`). `GET /?seconds=S` connects as PGUSER/PGPASSWORD to
127.0.0.1:PGPORT, runs `SELECT 1 + 1, pg_sleep(S)` and answers the rows.

The packaged CPython has no `_ssl`, and pg8000 imports `ssl` when it is imported (it needs it only for TLS): the
SDK's stand-in `ssl` module (`wasmcorn_wsgi.no_tls`) lets it import, and any use of TLS fails with a clear error.
Connections pass `ssl_context=False`.
"""
import os
from urllib.parse import parse_qs

from wasmcorn_wsgi import no_tls

no_tls.install()

import pg8000.native


def application(environ, start_response):
    seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("seconds", ["0"])[0])
    connection = pg8000.native.Connection(
        os.environ["PGUSER"],
        password=os.environ.get("PGPASSWORD"),
        host="127.0.0.1",
        port=int(os.environ["PGPORT"]),
        database="postgres",
        ssl_context=False,
    )
    try:
        rows = connection.run("SELECT 1 + 1, pg_sleep(:seconds)", seconds=seconds)
    finally:
        connection.close()
    body = f"rows={rows}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
