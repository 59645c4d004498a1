"""workload.py's database IO where psycopg2 cannot be imported: packaged by `wasmcorn build python`, where C
extensions cannot run, the same `SELECT pg_sleep(x)` goes through pg8000, a pure-Python driver, over the
sandbox's sockets (`--allow-net` grants the database's address). Gunicorn never imports this module.
"""
from urllib.parse import unquote, urlsplit

from wasmcorn_wsgi import no_tls

no_tls.install()  # pg8000 imports ssl; the packaged CPython has no TLS

import pg8000.native  # noqa: E402


def pg_sleep(url, seconds):
    """Connects to the PostgreSQL of `url` (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE), sleeps there."""
    parts = urlsplit(url)
    connection = pg8000.native.Connection(
        unquote(parts.username or ""),
        password=unquote(parts.password) if parts.password is not None else None,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        database=unquote(parts.path.lstrip("/")) or None,
        ssl_context=False,
    )
    try:
        connection.run("SELECT pg_sleep(:seconds)", seconds=seconds)
    finally:
        connection.close()
