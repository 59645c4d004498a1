"""A Flask app for the end-to-end tests, unchanged from what Gunicorn would serve; `validated` is the same app
inside wsgiref.validate (its warnings are errors)."""

import hashlib
import os
import warnings
from wsgiref.validate import WSGIWarning, validator

from flask import Flask, Response, jsonify, request

warnings.simplefilter("error", WSGIWarning)

app = Flask(__name__)
COUNTER = 0


@app.get("/")
def index():
    return "hello from Flask"


@app.get("/items/<int:item_id>")
def item(item_id):
    return jsonify(id=item_id, q=request.args.get("q"), tags=request.args.getlist("tag"))


@app.post("/json")
def echo_json():
    return jsonify(received=request.get_json())


@app.post("/upload")
def upload():
    digest = hashlib.sha256()
    length = 0
    while True:
        piece = request.stream.read(65536)
        if not piece:
            break
        digest.update(piece)
        length += len(piece)
    return jsonify(length=length, sha256=digest.hexdigest())


@app.get("/stream")
def stream():
    mib = request.args.get("mib", 1, type=int)
    chunk = bytes(range(256)) * 256

    def chunks():
        for _ in range(mib * 16):
            yield chunk

    return Response(chunks(), mimetype="application/octet-stream")


@app.get("/env/<name>")
def env(name):
    return os.environ.get(name, "<unset>")


@app.get("/boom")
def boom():
    raise KeyError("no such thing")


@app.get("/counter")
def counter():
    global COUNTER
    COUNTER += 1
    return str(COUNTER)


validated = validator(app)
