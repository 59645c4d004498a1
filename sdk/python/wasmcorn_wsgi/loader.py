"""What the generated module runs at build time, inside componentize-py's pre-initialisation: imports the
modules that are imported lazily (componentize-py packages only the modules loaded by then), imports the app,
finds its callable, runs the warm-up requests, and returns the class the component exports.

A failure is one line starting with `MARKER` on stderr (the build command prints it), then `SystemExit(1)`.
"""

import importlib
import sys

# Imported lazily by the standard library or by common frameworks (Werkzeug's URL handling needs the IDNA codec),
# so that they are in the package even when nothing imports them at build time.
LAZY_MODULES = (
    "encodings.idna",
    "encodings.punycode",
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.utf_8",
    "encodings.utf_16",
    "encodings.utf_32",
    "encodings.cp1252",
    "stringprep",
    "unicodedata",
)

MARKER = "wasmcorn-build-error:"


class BuildError(Exception):
    """What the build command reports, on one line."""


def fail(message):
    print(f"{MARKER} {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _missing_module_message(module, err, native_extensions):
    missing = err.name or ""
    for name in (missing, *_parents(missing)):
        if name in native_extensions:
            return (
                f"requirement {native_extensions[name]!r} needs the C extension {name!r}, "
                "which cannot run in WebAssembly (only pure-Python packages can be packaged)"
            )
    if missing == module or module.startswith(missing + "."):
        return f"module {module!r} not found (looked in --src and the requirements)"
    return f"module {module!r} imports {missing!r}, which is not installed (is it in --requirements?)"


def _parents(name):
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(len(parts) - 1, 0, -1)]


def find_app(module, attribute, native_extensions):
    """The WSGI callable `module:attribute`; raises `BuildError` saying what is missing."""
    try:
        loaded = importlib.import_module(module)
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError):
            raise BuildError(_missing_module_message(module, err, native_extensions)) from err
        raise BuildError(f"module {module!r} cannot be imported: {type(err).__name__}: {err}") from err
    except Exception as err:
        raise BuildError(f"module {module!r} raised {type(err).__name__} when imported: {err}") from err
    app = loaded
    for part in attribute.split("."):
        if not hasattr(app, part):
            raise BuildError(f"module {module!r} has no callable {attribute!r}")
        app = getattr(app, part)
    if not callable(app):
        raise BuildError(f"{module}:{attribute} is not callable (it is a {type(app).__name__})")
    return app


def load(module, attribute, warmup=(), native_extensions=None):
    """The `WitWorld` class for `module:attribute`, after the lazy imports and the warm-up requests."""
    for name in LAZY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from .guest import world_for
    from .warmup import WarmupError, warm_up

    try:
        app = find_app(module, attribute, native_extensions or {})
        warm_up(app, warmup)
    except (BuildError, WarmupError) as err:
        import traceback

        if err.__cause__ is not None and not isinstance(err.__cause__, ImportError):
            traceback.print_exception(err.__cause__, file=sys.stderr)
        fail(err)
    return world_for(app)
