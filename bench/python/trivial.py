"""The smallest WSGI app: 204 and no body. Measures the floor of one request (python-compare.sh)."""


def application(environ, start_response):
    start_response("204 No Content", [])
    return []
