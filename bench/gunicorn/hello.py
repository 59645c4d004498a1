"""Minimal WSGI hello app for bench/hello-compare.sh (gunicorn side).

Run: gunicorn --chdir bench/gunicorn --workers 1 --worker-class sync hello:application
"""

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", list(HEADERS))
    return [BODY]
