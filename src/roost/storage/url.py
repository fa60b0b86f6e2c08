"""Turn a repository location string (``--repo`` / ``ROOST_REPO``) into a backend."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from roost.errors import StorageError, UsageError
from roost.storage.base import Backend
from roost.storage.local import LocalBackend
from roost.storage.memory import MemoryBackend
from roost.storage.retry import RetryingBackend

SUPPORTED_FORMS = (
    "  /path/to/repo or file:///path/to/repo    a local directory\n"
    "  s3://BUCKET/PREFIX[?endpoint=URL&region=REGION]\n"
    "      S3 or S3-compatible storage; the endpoint may also come from ROOST_S3_ENDPOINT,\n"
    "      credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY\n"
    "  memory:// or memory://NAME    in-process storage for tests (NAME is shared per process)"
)

_S3_OPTIONS = frozenset({"endpoint", "region"})

# Named memory backends live as long as the process, so that several open_backend calls in
# one test (init, then backup, then restore) see the same repository.
_named_memory: dict[str, MemoryBackend] = {}
_named_memory_lock = threading.Lock()


def open_backend(location: str) -> Backend:
    """Return the backend for ``location``; UsageError if the form is not understood."""
    if not location:
        raise _usage("no repository location given")
    if "://" not in location:
        return _local(Path(location).expanduser())
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _usage(f"file URLs must name a local path, not host {parts.netloc!r}")
        return _local(Path(unquote(parts.path)))
    if scheme == "memory":
        return _memory(parts.netloc + parts.path.rstrip("/"))
    if scheme == "s3":
        return _s3(location)
    raise _usage(f"unsupported repository location {_redact(location)!r}")


def _local(path: Path) -> Backend:
    # Short and quick: local errors are rarely transient, but NFS/SMB mounts do hiccup.
    return RetryingBackend(LocalBackend(path), attempts=3, base_delay=0.1)


def _memory(name: str) -> Backend:
    if not name:
        return MemoryBackend()
    with _named_memory_lock:
        return _named_memory.setdefault(name, MemoryBackend(name))


def _s3(location: str) -> Backend:
    parts = urlsplit(location)
    if not parts.netloc:
        raise _usage(f"{_redact(location)!r} names no bucket")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _S3_OPTIONS)
    if unknown:
        raise _usage(f"unknown S3 option(s) {', '.join(unknown)} in {_redact(location)!r}")
    if "@" in parts.netloc:
        # Credentials in a URL end up in shell history and process lists.
        raise _usage("do not put credentials in the URL; set AWS_ACCESS_KEY_ID/SECRET instead")
    endpoint = _single(query, "endpoint") or os.environ.get("ROOST_S3_ENDPOINT") or None
    region = _single(query, "region") or None
    from roost.storage.s3 import S3Backend  # boto3 costs ~0.1 s at start; only S3 users pay it

    try:
        backend = S3Backend(
            bucket=parts.netloc,
            prefix=unquote(parts.path),
            endpoint_url=endpoint,
            region=region,
        )
    except (StorageError, ValueError) as exc:  # a bad prefix or endpoint URL
        raise _usage(f"invalid S3 location {_redact(location)!r}: {exc}") from exc
    return RetryingBackend(backend)


def _single(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name, [])
    if len(values) > 1:
        raise _usage(f"S3 option {name!r} given more than once")
    return values[0] if values else ""


def _redact(location: str) -> str:
    """The location without any user:password@ part, fit to echo in a message."""
    parts = urlsplit(location)
    if "@" not in parts.netloc:
        return location
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def _usage(problem: str) -> UsageError:
    return UsageError(f"{problem}; supported repository locations:\n{SUPPORTED_FORMS}")
