"""``run_server(settings)``: what `roost server` does — prepare, print how to connect, serve."""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import socket
from collections.abc import Callable

import uvicorn

from roost.errors import UsageError
from roost.memory import tune_allocator
from roost.server.app import create_app, prepare_state
from roost.server.config import ServerSettings
from roost.server.security import ensure_certificate, fingerprint
from roost.server.state import ServerState

# The CLI sets a 128 KiB mmap threshold for every roost process (roost/memory.py), which keeps
# a backup's memory bounded. In the server it made every buffer of an upload's path (TLS
# records, HTTP parser, body pieces, the joined body) a fresh mmap that is faulted in and
# unmapped again: receiving 17 packs of 16 MiB (a full backup of the kernel tree) cost 2.0-2.3 s
# of system time, against 0.45 s with a 32 MiB threshold (glibc's own upper bound), at the same
# peak RSS (163 MiB). Bodies up to 32 MiB (packs are 16 MiB) are then reused from the heap.
# (Bodies are no longer joined: since session 7 they go to a spool file as they arrive, see
# api/storage.py, which took the rest of that system time: 0.69-0.78 -> 0.22-0.25 s.)
SERVER_MMAP_THRESHOLD = 32 * 1024 * 1024
_M_TRIM_THRESHOLD = -1
# Packs arrive as 16 MiB bodies over TLS: with asyncio's pure-Python TLS transport and the h11
# parser the server took ~1.5 s of CPU for a full backup of the kernel tree (270 MB), beside
# an agent that needs both cores. uvloop's transport and the httptools parser (C) cut that by
# ~0.15 s (docs/performance.md, session 7).
HTTP_PARSER = "httptools"

INSECURE_REMOTE = (
    "--insecure-http is allowed only with a loopback --bind (127.0.0.1, ::1 or localhost): "
    "agents would send credentials and repository keys in clear text"
)


def prepare_tls(settings: ServerSettings) -> str | None:
    """The certificate's SHA-256 fingerprint (self-signed on first start), None over HTTP."""
    if settings.insecure_http:
        if not settings.bind_is_loopback:
            raise UsageError(INSECURE_REMOTE)
        return None
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither for a self-signed one")
    if settings.tls_cert is not None:
        if not settings.cert_path.is_file() or not settings.key_path.is_file():
            raise UsageError(f"{settings.cert_path} or {settings.key_path} does not exist")
        return fingerprint(settings.cert_path.read_bytes())
    return ensure_certificate(settings.cert_path, settings.key_path)


def banner(settings: ServerSettings, state: ServerState, tls_fingerprint: str | None) -> str:
    host, port = settings.host_port
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    scheme = "http" if tls_fingerprint is None else "https"
    lines = [f"Roost server listening on {scheme}://{shown}:{port}/"]
    if tls_fingerprint is not None:
        lines.append(f"TLS certificate fingerprint (SHA-256): {tls_fingerprint}")
    else:
        lines.append("WARNING: plain HTTP (--insecure-http); use it for local tests only")
    if state.boot.admin_password is not None:
        lines.append(f"First start: user 'admin', password: {state.boot.admin_password}")
        lines.append("This password is shown only once; change it or note it now.")
    return "\n".join(lines)


def tune_server_allocator() -> bool:
    """The server's malloc settings (see SERVER_MMAP_THRESHOLD); whether they were applied.

    Also keeps up to twice the threshold of freed memory at the top of the heap before giving
    it back (glibc's own ratio when it adjusts the threshold itself), so that the next body
    does not fault its pages in again.
    """
    if not tune_allocator(mmap_threshold=SERVER_MMAP_THRESHOLD):
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 * SERVER_MMAP_THRESHOLD) == 1)


def run_server(settings: ServerSettings, echo: Callable[[str], None] = print) -> None:
    """Bootstrap, migrate, print the URL and fingerprint, and serve until interrupted."""
    if settings.insecure_http and not settings.bind_is_loopback:
        raise UsageError(INSECURE_REMOTE)  # refuse before touching anything
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)  # it holds every secret
    tls_fingerprint = prepare_tls(settings)
    host, port = settings.host_port
    state = prepare_state(settings)
    tune_server_allocator()
    app = create_app(settings, state=state)
    echo(banner(settings, state, tls_fingerprint))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    tls = (
        {}
        if tls_fingerprint is None
        else {
            "ssl_certfile": str(settings.cert_path),
            "ssl_keyfile": str(settings.key_path),
        }
    )
    # agents hold long-polls open; do not wait the whole poll out on Ctrl-C / SIGTERM
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=3,
        loop=event_loop(),
        http=HTTP_PARSER,
        **tls,  # type: ignore[arg-type]
    )


def event_loop() -> str:
    """uvloop where it is installed (every platform but Windows): see HTTP_PARSER."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
