"""Typed calls to the agent routes (see roost.protocol.agent_api) over one httpx client.

HTTP and network failures are translated here, once: a transport failure becomes
:class:`ServerUnreachable`, an HTTP error :class:`ServerRefused` carrying the server's
``detail``, and a body that does not match the schema :class:`AgentError`.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from roost.agent.errors import AgentError, ServerRefused, ServerUnreachable
from roost.protocol.agent_api import (
    EnrollRequest,
    EnrollResponse,
    JobEvent,
    JobEventResponse,
    PollRequest,
    PollResponse,
    RepositoryKeyResponse,
)

M = TypeVar("M", bound=BaseModel)

POLL_GRACE = 15.0  # seconds the HTTP read timeout exceeds the long-poll wait
_ERRNO = re.compile(r"\[Errno -?\d+\] ")  # OSError's prefix: noise in a one-line message


class ServerApi:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    @property
    def base_url(self) -> str:
        return str(self.client.base_url).rstrip("/")

    def enroll(self, request: EnrollRequest) -> EnrollResponse:
        response = self._call("POST", "/enroll", "the enrollment", json=_dump(request))
        return _parse(EnrollResponse, response)

    def poll(self, request: PollRequest) -> PollResponse:
        timeout = httpx.Timeout(request.wait_seconds + POLL_GRACE, connect=15.0)
        response = self._call("POST", "/poll", "the poll", json=_dump(request), timeout=timeout)
        return _parse(PollResponse, response)

    def repository(self) -> RepositoryKeyResponse:
        response = self._call("GET", "/repository", "the repository key request")
        return _parse(RepositoryKeyResponse, response)

    def send_event(self, job_id: str, event: JobEvent) -> JobEventResponse:
        response = self._call(
            "POST", f"/jobs/{job_id}/events", f"the event for job {job_id}", json=_dump(event)
        )
        return _parse(JobEventResponse, response)

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach the server at {self.base_url}: {describe_transport_error(exc)}"
            ) from exc
        if response.status_code >= 400:
            raise ServerRefused(response.status_code, error_detail(response), what)
        return response


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def _parse(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise AgentError(
            f"the server's answer to {response.request.method} {response.request.url.path} "
            f"does not match this agent's protocol ({exc.error_count()} errors); the server "
            "and agent versions may differ"
        ) from exc


def error_detail(response: httpx.Response) -> str:
    """The server's ``{"detail": ...}`` message, or the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors: a list of {"loc", "msg"}
        detail = "; ".join(_validation_message(item) for item in detail)
    if detail:
        return str(detail)
    text = response.text.strip()
    return text[:300] if text else response.reason_phrase or "no detail"


def _validation_message(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    location = ".".join(str(part) for part in item.get("loc", []) if part != "body")
    return f"{location}: {item.get('msg', '')}" if location else str(item.get("msg", ""))


def describe_transport_error(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = _ERRNO.sub("", str(exc)) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            "the server presented a certificate other than the pinned one (TLS verification "
            f"failed: {text})"
        )
    return text
