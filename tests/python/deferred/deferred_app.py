"""Reads its setting when imported, as the study's workload.py does: built with --defer-import, it sees the
server's --env; imported at build time, it would see the build's empty environment."""

import os

GREETING = os.environ.get("GREETING", "<unset at import>")


def application(environ, start_response):
    body = GREETING.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
