"""What the generated module runs at build time, inside componentize-py's pre-initialisation: imports the
modules that are imported lazily (componentize-py packages only the modules loaded by then), imports the app,
finds its callable, runs the warm-up requests, and returns the class the component exports.

A failure is one line starting with `MARKER` on stderr (the build command prints it), then `SystemExit(1)`.
"""

import gc
import importlib
import importlib.util
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


class DeferredApp:
    """`module:attribute` whose module code was compiled at build time and runs at the first request of each
    fresh instance, so that what it reads at import (os.environ, say) is the server's, not the build's."""

    def __init__(self, module, attribute):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "get_code"):
            raise BuildError(f"module {module!r} not found (looked in --src and the requirements)")
        self._code = spec.loader.get_code(module)
        self._spec = spec
        self._attribute = attribute
        self._app = None
        # What the module imports at its top level is imported now, so that it is packaged (an import that
        # fails now, a driver imported only under some setting, say, is left to the request).
        import dis

        for instruction in dis.get_instructions(self._code):
            if instruction.opname == "IMPORT_NAME":
                try:
                    importlib.import_module(instruction.argval)
                except Exception:
                    pass

    def _load(self):
        loaded = importlib.util.module_from_spec(self._spec)
        sys.modules[self._spec.name] = loaded
        exec(self._code, loaded.__dict__)
        app = loaded
        for part in self._attribute.split("."):
            app = getattr(app, part)
        return app

    def forget(self):
        """Drops what a warm-up request loaded, so that the snapshot holds the compiled code alone."""
        self._app = None
        sys.modules.pop(self._spec.name, None)

    def __call__(self, environ, start_response):
        if self._app is None:
            self._app = self._load()
        return self._app(environ, start_response)


def load(module, attribute, warmup=(), native_extensions=None, defer_import=False):
    """The `WitWorld` class for `module:attribute`, after the lazy imports and the warm-up requests. With
    `defer_import`, the module's code runs at each fresh instance's first request instead (see `DeferredApp`)."""
    for name in LAZY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from .guest import world_for
    from .warmup import WarmupError, warm_up

    try:
        if defer_import:
            app = DeferredApp(module, attribute)
        else:
            app = find_app(module, attribute, native_extensions or {})
        warm_up(app, warmup)
        if defer_import:
            app.forget()
    except (BuildError, WarmupError) as err:
        import traceback

        if err.__cause__ is not None and not isinstance(err.__cause__, ImportError):
            traceback.print_exception(err.__cause__, file=sys.stderr)
        fail(err)
    # Everything alive now is in the snapshot that every request starts from. Frozen, the collector never scans
    # it again: a collection during a request then touches (and copies) only the request's own objects.
    gc.collect()
    gc.freeze()
    return world_for(app)
