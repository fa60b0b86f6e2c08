"""S3Backend error handling and request shapes, with botocore's Stubber (no server needed).

The behaviour against a real S3 protocol server is in tests/contract.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from roost.errors import ObjectExists, ObjectNotFound, StorageError
from roost.storage.s3 import S3Backend, make_client

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

SECRET = "wJalrXUtnFEMI-secret"
ENDPOINT = "http://127.0.0.1:1"  # nothing listens on port 1: any real request fails fast


@pytest.fixture(scope="module")
def client() -> S3Client:
    return make_client(ENDPOINT, "us-east-1", "AKIDEXAMPLE", SECRET)  # ~0.2 s: build once


@pytest.fixture
def backend(client: S3Client) -> S3Backend:
    return S3Backend(
        "bkt",
        "repo",
        endpoint_url=ENDPOINT,
        access_key="AKIDEXAMPLE",
        secret_key=SECRET,
        client=client,
    )


@pytest.fixture
def stub(client: S3Client) -> Iterator[Stubber]:
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def test_put_is_conditional(backend: S3Backend, stub: Stubber) -> None:
    stub.add_response(
        "put_object", {}, {"Bucket": "bkt", "Key": "repo/k", "Body": b"v", "IfNoneMatch": "*"}
    )
    backend.put("k", b"v")


def test_precondition_failed_is_object_exists(backend: S3Backend, stub: Stubber) -> None:
    stub.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
    with pytest.raises(ObjectExists):
        backend.put("k", b"v")


def test_server_without_conditional_put_falls_back_once(backend: S3Backend, stub: Stubber) -> None:
    stub.add_client_error("put_object", "NotImplemented", http_status_code=501)
    stub.add_client_error("head_object", "404", http_status_code=404)
    stub.add_response("put_object", {}, {"Bucket": "bkt", "Key": "repo/k", "Body": b"v"})
    backend.put("k", b"v")
    # Later puts go straight to head-then-put.
    stub.add_response("head_object", {"ContentLength": 1})
    with pytest.raises(ObjectExists):
        backend.put("k", b"v")


def test_put_file_is_conditional(backend: S3Backend, stub: Stubber) -> None:
    file = io.BytesIO(b"pack")
    expected = {"Bucket": "bkt", "Key": "repo/k", "Body": file, "IfNoneMatch": "*"}
    stub.add_response("put_object", {}, expected)
    backend.put_file("k", file, 4)
    assert backend.spool_dir() is None


def test_get_range_sends_a_range_header(backend: S3Backend, stub: Stubber) -> None:
    stub.add_response(
        "get_object",
        {"Body": body(b"234"), "ContentRange": "bytes 2-4/10", "ContentLength": 3},
        {"Bucket": "bkt", "Key": "repo/k", "Range": "bytes=2-4"},
    )
    assert backend.get_range("k", 2, 3) == b"234"


def test_get_range_when_server_ignores_range(backend: S3Backend, stub: Stubber) -> None:
    stub.add_response("get_object", {"Body": body(b"0123456789"), "ContentLength": 10})
    assert backend.get_range("k", 2, 3) == b"234"


def test_short_read_is_a_storage_error(backend: S3Backend, stub: Stubber) -> None:
    stub.add_response("get_object", {"Body": body(b"abc"), "ContentLength": 5})
    with pytest.raises(StorageError, match="short read"):
        backend.get("k")


def test_delete_of_missing_key_is_not_found(backend: S3Backend, stub: Stubber) -> None:
    stub.add_client_error("head_object", "404", http_status_code=404)
    with pytest.raises(ObjectNotFound, match="s3://bkt/repo/k"):
        backend.delete("k")


def test_no_such_key(backend: S3Backend, stub: Stubber) -> None:
    stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)
    with pytest.raises(ObjectNotFound):
        backend.get("k")


def test_access_denied_gives_advice_and_hides_secrets(backend: S3Backend, stub: Stubber) -> None:
    stub.add_client_error(
        "get_object", "AccessDenied", f"denied for {SECRET}", http_status_code=403
    )
    with pytest.raises(StorageError) as err:
        backend.get("k")
    message = str(err.value)
    assert type(err.value) is StorageError
    assert "AccessDenied" in message and "AWS_ACCESS_KEY_ID" in message
    assert SECRET not in message and "***" in message


def test_missing_bucket(backend: S3Backend, stub: Stubber) -> None:
    stub.add_client_error("put_object", "NoSuchBucket", http_status_code=404)
    with pytest.raises(StorageError, match="bucket 'bkt' does not exist") as err:
        backend.put("k", b"v")
    assert not isinstance(err.value, ObjectNotFound)


def test_server_error_is_a_plain_storage_error(backend: S3Backend, stub: Stubber) -> None:
    stub.add_client_error("head_object", "InternalError", "oops", http_status_code=500)
    with pytest.raises(StorageError) as err:
        backend.stat("k")
    assert type(err.value) is StorageError  # so RetryingBackend retries it
    assert "cannot stat s3://bkt/repo/k: InternalError: oops" in str(err.value)


def test_list_strips_prefix_and_skips_folder_markers(backend: S3Backend, stub: Stubber) -> None:
    stub.add_response(
        "list_objects_v2",
        {
            "Contents": [
                {"Key": "repo/index/", "Size": 0},
                {"Key": "repo/index/i1", "Size": 7},
            ],
            "IsTruncated": True,
            "NextContinuationToken": "t",
        },
        {"Bucket": "bkt", "Prefix": "repo/index/"},
    )
    stub.add_response(
        "list_objects_v2",
        {"Contents": [{"Key": "repo/index/i2", "Size": 8}], "IsTruncated": False},
        {"Bucket": "bkt", "Prefix": "repo/index/", "ContinuationToken": "t"},
    )
    assert [(i.key, i.size) for i in backend.list("index/")] == [("index/i1", 7), ("index/i2", 8)]


def test_unreachable_endpoint(backend: S3Backend) -> None:
    with pytest.raises(StorageError, match="cannot read s3://bkt/repo/k: Could not connect"):
        backend.get("k")


def test_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    backend = S3Backend("bkt", endpoint_url=ENDPOINT, region="us-east-1")
    with pytest.raises(StorageError, match="no S3 credentials found: set AWS_ACCESS_KEY_ID"):
        backend.stat("k")


def test_describe_hides_endpoint_userinfo() -> None:
    backend = S3Backend(
        "bkt",
        "/a/b/",
        endpoint_url="http://user:pw@127.0.0.1:9000",
        region="us-east-1",
        access_key="k",
        secret_key="s",
    )
    assert backend.describe() == "s3://bkt/a/b/ at http://127.0.0.1:9000"


def test_bucket_is_required() -> None:
    with pytest.raises(StorageError, match="needs a bucket"):
        S3Backend("")
