"""A stand-in `ssl` module for packages that import `ssl` but need it only for TLS, such as pg8000.

The CPython that `wasmcorn build python` packages has no `_ssl` (there is no TLS in the sandbox), so `import ssl`
fails, and with it every package that imports `ssl` when it is imported. `install()` puts a stand-in in
`sys.modules` when, and only when, the real module cannot be imported: the package then imports, its classes and
constants exist, and any attempt at TLS (`ssl.create_default_context()`) raises `OSError` saying there is none.
Call it before importing such a package:

    from wasmcorn_wsgi import no_tls
    no_tls.install()
    import pg8000.native  # then connect with ssl_context=False
"""

import sys
import types

_CLASSES = ("SSLContext", "SSLObject", "SSLSocket", "Purpose")
_ERRORS = ("SSLError", "SSLZeroReturnError", "SSLWantReadError", "SSLWantWriteError", "SSLSyscallError",
           "SSLEOFError", "SSLCertVerificationError", "CertificateError")


def _no_tls(*args, **kwargs):
    raise OSError("TLS is not available in the wasmcorn sandbox")


def install():
    """Makes `import ssl` succeed: the real module when it can be imported, the stand-in otherwise."""
    try:
        import ssl  # noqa: F401
        return
    except ImportError:
        pass
    stand_in = types.ModuleType("ssl", "A stand-in: no TLS in the wasmcorn sandbox (see wasmcorn_wsgi.no_tls).")
    for name in _CLASSES:
        setattr(stand_in, name, type(name, (), {"__init__": _no_tls}))
    for name in _ERRORS:
        setattr(stand_in, name, type(name, (OSError,), {}))
    stand_in.CERT_NONE, stand_in.CERT_OPTIONAL, stand_in.CERT_REQUIRED = 0, 1, 2
    stand_in.PROTOCOL_TLS_CLIENT, stand_in.PROTOCOL_TLS_SERVER = 16, 17
    stand_in.HAS_SNI = False
    stand_in.create_default_context = _no_tls
    stand_in.wrap_socket = _no_tls
    sys.modules["ssl"] = stand_in
