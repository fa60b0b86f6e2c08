"""A repository in an S3 bucket (AWS or any S3-compatible server such as MinIO).

Keys map to ``<prefix>/<key>`` in the bucket. ``put`` without ``overwrite`` uses a
conditional write (``If-None-Match: *``) so two clients can never replace each other's
objects; servers that do not implement it get a head-then-put fallback. ``put_file`` does the
same with the file as the request body: botocore streams it (and rewinds it itself for its
checksums), and each request starts again from the file's beginning.

Retrying is left to :class:`~roost.storage.retry.RetryingBackend`: botocore's own retries
are switched off because a conditional put that botocore silently retries after a lost
response comes back "412 exists" and we could not tell it was our own write.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from roost.errors import ObjectExists, ObjectNotFound, StorageError
from roost.storage.base import ObjectInfo
from roost.storage.local import check_range, validate_key, validate_prefix
from roost.storage.spool import check_size

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_EXISTS = frozenset({"412", "PreconditionFailed"})
_DENIED = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)
_CREDENTIAL_ADVICE = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile) with access to the bucket"
)


class S3Backend:
    """Objects in ``bucket`` under ``prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        conditional_put: bool = True,
        client: S3Client | None = None,
    ) -> None:
        if not bucket:
            raise StorageError("an S3 location needs a bucket name: s3://BUCKET/PREFIX")
        self._bucket = bucket
        self._prefix = _normalise_prefix(prefix)
        self._endpoint = endpoint_url
        self._conditional_put = conditional_put
        # Remembered only to scrub them from error messages that echo server text.
        self._secrets = tuple(
            s
            for s in (access_key, secret_key, *_env_credentials())
            if s  # an empty string would "match" everywhere
        )
        self._client = client or make_client(endpoint_url, region, access_key, secret_key)

    def describe(self) -> str:
        where = f"s3://{self._bucket}/{self._prefix}"
        if self._endpoint:
            parts = urlsplit(self._endpoint)
            # hostname/port only: an endpoint URL may carry user:password@.
            where += f" at {parts.scheme}://{parts.hostname}" + (
                f":{parts.port}" if parts.port else ""
            )
        return where

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        self._store(key, lambda: data, overwrite)

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        check_size(file, size)

        def body() -> BinaryIO:
            file.seek(0)  # a request that failed (or was refused) may have read part of it
            return file

        self._store(key, body, overwrite)

    def spool_dir(self) -> str | None:
        return None  # every object is uploaded: a local temp directory is best

    def _store(self, key: str, body: Callable[[], bytes | BinaryIO], overwrite: bool) -> None:
        """put_object of ``body()`` (called once per request) with put's semantics."""
        name = self._name(key)
        if overwrite:
            with self._errors("write", key):
                self._client.put_object(Bucket=self._bucket, Key=name, Body=body())
            return
        if self._conditional_put and self._put_if_absent(key, name, body):
            return
        self._conditional_put = False
        # Fallback for servers without conditional writes: a small race remains, which is
        # harmless for content-addressed objects (both writers store the same bytes).
        if self._exists(key, name):
            raise ObjectExists(f"{self._where(key)} already exists")
        with self._errors("write", key):
            self._client.put_object(Bucket=self._bucket, Key=name, Body=body())

    def get(self, key: str) -> bytes:
        name = self._name(key)
        with self._errors("read", key):
            resp = self._client.get_object(Bucket=self._bucket, Key=name)
            data = resp["Body"].read()
        if len(data) != resp["ContentLength"]:
            raise StorageError(f"short read of {self._where(key)}: connection interrupted")
        return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        check_range(offset, length)
        name = self._name(key)
        if length == 0:  # HTTP cannot express an empty range; still report a missing key
            self.stat(key)
            return b""
        with self._errors("read", key):
            try:
                resp = self._client.get_object(
                    Bucket=self._bucket, Key=name, Range=f"bytes={offset}-{offset + length - 1}"
                )
            except ClientError as exc:
                if _code(exc) == "InvalidRange":  # 416: offset at or past the end
                    return b""
                raise
            data = resp["Body"].read()
        if "ContentRange" not in resp:  # a server that ignored Range sent everything
            data = data[offset : offset + length]
        return data

    def stat(self, key: str) -> ObjectInfo:
        name = self._name(key)
        with self._errors("stat", key):
            resp = self._client.head_object(Bucket=self._bucket, Key=name)
        return ObjectInfo(key, resp["ContentLength"])

    def delete(self, key: str) -> None:
        name = self._name(key)
        # S3 deletes of absent keys succeed silently; the contract says ObjectNotFound.
        if not self._exists(key, name):
            raise ObjectNotFound(f"{self._where(key)} does not exist")
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self._bucket, Key=name)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        strip = len(self._prefix)
        with self._errors("list", prefix):
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix + prefix):
                for obj in page.get("Contents", []):
                    name = obj.get("Key", "")
                    # Skip "folder" markers that S3 consoles create; they are not objects.
                    if not name.endswith("/"):
                        yield ObjectInfo(name[strip:], obj.get("Size", 0))

    def _put_if_absent(self, key: str, name: str, body: Callable[[], bytes | BinaryIO]) -> bool:
        """Conditional put; False when the server does not support If-None-Match."""
        with self._errors("write", key):
            try:
                self._client.put_object(Bucket=self._bucket, Key=name, Body=body(), IfNoneMatch="*")
            except ClientError as exc:
                if _rejects_conditional_put(exc):
                    return False
                raise
        return True

    def _exists(self, key: str, name: str) -> bool:
        try:
            with self._errors("stat", key):
                self._client.head_object(Bucket=self._bucket, Key=name)
        except ObjectNotFound:
            return False
        return True

    def _name(self, key: str) -> str:
        validate_key(key)
        return self._prefix + key

    def _where(self, key: str) -> str:
        return f"s3://{self._bucket}/{self._prefix}{key}"

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """Translate botocore failures into roost errors, once, at the I/O boundary."""
        try:
            yield
        except ClientError as exc:
            raise self._from_client_error(exc, action, key) from exc
        except NoCredentialsError as exc:
            raise StorageError(f"no S3 credentials found: {_CREDENTIAL_ADVICE}") from exc
        except BotoCoreError as exc:
            reason = self._scrub(str(exc))
            raise StorageError(f"cannot {action} {self._where(key)}: {reason}") from exc

    def _from_client_error(self, exc: ClientError, action: str, key: str) -> StorageError:
        code = _code(exc)
        where = self._where(key)
        if code in _NOT_FOUND:
            return ObjectNotFound(f"{where} does not exist")
        if code in _EXISTS:
            return ObjectExists(f"{where} already exists and objects are never overwritten")
        if code == "NoSuchBucket":
            return StorageError(f"bucket {self._bucket!r} does not exist; create it first")
        message = self._scrub(exc.response.get("Error", {}).get("Message", "") or code)
        text = f"cannot {action} {where}: {code}: {message}"
        if code in _DENIED:
            text += f"; {_CREDENTIAL_ADVICE}"
        return StorageError(text)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def make_client(
    endpoint_url: str | None,
    region: str | None,
    access_key: str | None,
    secret_key: str | None,
) -> S3Client:
    """An S3 client set up as S3Backend needs it. Clients are thread-safe and cost ~0.2 s to
    build, so many backends on one endpoint may share one (pass it as ``client``)."""
    # A private session: boto3's default session is not safe to create from many threads.
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
    )
    config = Config(
        retries={"total_max_attempts": 1},  # RetryingBackend retries; see module docstring
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=16,
        # Custom endpoints (MinIO, moto, Ceph) rarely do virtual-host bucket DNS.
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    validate_prefix(prefix)
    return prefix + "/"


def _code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    code = error.get("Code") or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return str(code)


def _rejects_conditional_put(exc: ClientError) -> bool:
    code = _code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "")).lower()
    return code in ("NotImplemented", "501") or (
        code == "InvalidArgument" and "if-none-match" in message
    )


def _env_credentials() -> tuple[str, ...]:
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    return tuple(os.environ.get(n, "") for n in names)
