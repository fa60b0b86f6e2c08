"""open_backend: every supported location form, and clear refusals for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.errors import UsageError
from roost.storage.base import Backend
from roost.storage.local import LocalBackend
from roost.storage.memory import MemoryBackend
from roost.storage.retry import RetryingBackend
from roost.storage.s3 import S3Backend
from roost.storage.url import open_backend


def unwrap(backend: Backend) -> Backend:
    assert isinstance(backend, RetryingBackend)
    return backend.inner


def test_plain_path_is_local(tmp_path: Path) -> None:
    inner = unwrap(open_backend(str(tmp_path / "repo")))
    assert isinstance(inner, LocalBackend)
    assert inner.root == tmp_path / "repo"


def test_relative_and_home_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    home = unwrap(open_backend("~/backups"))
    assert isinstance(home, LocalBackend) and home.root == tmp_path / "backups"
    relative = unwrap(open_backend("repo"))
    assert isinstance(relative, LocalBackend) and relative.root == Path("repo")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("file:///srv/backups/repo", "/srv/backups/repo"),
        ("file://localhost/srv/repo", "/srv/repo"),
        ("file:///srv/with%20space", "/srv/with space"),
    ],
)
def test_file_urls(url: str, path: str) -> None:
    inner = unwrap(open_backend(url))
    assert isinstance(inner, LocalBackend) and inner.root == Path(path)


def test_file_url_with_remote_host_is_refused() -> None:
    with pytest.raises(UsageError, match="not host 'server'"):
        open_backend("file://server/share")


def test_memory_is_fresh_unless_named() -> None:
    a, b = open_backend("memory://"), open_backend("memory://")
    assert isinstance(a, MemoryBackend) and a is not b
    named = open_backend("memory://url-test-shared")
    named.put("config", b"x")
    assert open_backend("memory://url-test-shared").get("config") == b"x"


def test_s3_url() -> None:
    inner = unwrap(open_backend("s3://bkt/some/prefix?endpoint=http://127.0.0.1:9000&region=eu-1"))
    assert isinstance(inner, S3Backend)
    assert inner.describe() == "s3://bkt/some/prefix/ at http://127.0.0.1:9000"


def test_s3_endpoint_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_S3_ENDPOINT", "http://127.0.0.1:9100")
    inner = unwrap(open_backend("s3://bkt"))
    assert inner.describe() == "s3://bkt/ at http://127.0.0.1:9100"


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("", "no repository location given"),
        ("sftp://host/repo", "unsupported repository location 'sftp://host/repo'"),
        ("s3://", "names no bucket"),
        ("s3://bkt/p?endpiont=http://x", "unknown S3 option(s) endpiont"),
        ("s3://bkt/p?region=a&region=b", "given more than once"),
        ("s3://bkt/a/../b", "invalid S3 location"),
    ],
)
def test_refusals_list_supported_forms(location: str, problem: str) -> None:
    with pytest.raises(UsageError) as err:
        open_backend(location)
    message = str(err.value)
    assert problem in message
    assert "s3://BUCKET/PREFIX" in message and "file:///path/to/repo" in message


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("s3://AKID:hunter2@bkt/p", "do not put credentials in the URL"),
        ("sftp://me:hunter2@host/repo", "unsupported repository location 'sftp://***@host/repo'"),
    ],
)
def test_refusals_never_echo_passwords(location: str, problem: str) -> None:
    with pytest.raises(UsageError) as err:
        open_backend(location)
    assert problem in str(err.value)
    assert "hunter2" not in str(err.value)
