"""Flask's hello world, served unchanged by Gunicorn and by wasmcorn in python-compare.sh."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello():
    return "Hello, World!"
