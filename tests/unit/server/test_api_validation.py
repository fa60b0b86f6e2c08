"""Every route refuses malformed bodies, unknown fields and bad parameters with a 4xx detail."""

from __future__ import annotations

from typing import Any

import pytest
from tests.helpers.server import Harness

# (method, path, a valid body, who calls it). Bodies are valid so that adding one unknown
# field is the only thing wrong with the request.
BODY_ROUTES: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/api/v1/login", {"username": "admin", "password": "x"}, "nobody"),
    ("POST", "/api/v1/tokens", {"expires_in": 600}, "admin"),
    ("POST", "/api/v1/policies", {"name": "p", "schedule": "daily 02:00"}, "admin"),
    ("POST", "/api/v1/sets", {"name": "s", "agent": "fs1", "paths": ["/srv"]}, "admin"),
    ("POST", "/api/v1/restores", {"set": "s", "target": "/tmp/r"}, "admin"),
    (
        "POST",
        "/api/v1/agent/enroll",
        {"token": "x" * 20, "name": "fs9", "hostname": "h", "os": "o", "version": "v"},
        "nobody",
    ),
    (
        "POST",
        "/api/v1/agent/poll",
        {"boot_id": "b", "hostname": "h", "os": "o", "version": "v", "wait_seconds": 0},
        "agent",
    ),
    ("POST", "/api/v1/agent/jobs/{job}/events", {"state": "running"}, "agent"),
]

# Wrong types or values, one per route: each must be a 422 that names the field.
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("/api/v1/login", {"username": 5, "password": "x"}, "body.username"),
    ("/api/v1/tokens", {"uses": 0}, "body.uses"),
    ("/api/v1/policies", {"name": "p", "schedule": "every tuesday"}, "body"),
    ("/api/v1/policies", {"name": "p", "schedule": "daily 02:00", "timezone": "Mars/Base"}, "body"),
    ("/api/v1/policies", {"name": "p", "schedule": "daily 2", "window": "soon"}, "body"),
    ("/api/v1/sets", {"name": "s", "agent": "fs1", "paths": ["relative/dir"]}, "body.paths.0"),
    ("/api/v1/sets", {"name": "bad name", "agent": "fs1", "paths": ["/srv"]}, "body.name"),
    ("/api/v1/restores", {"set": "s", "target": "/r", "conflict": "merge"}, "body.conflict"),
    ("/api/v1/agent/enroll", {"token": "short"}, "body.token"),
    (
        "/api/v1/agent/poll",
        {"boot_id": "b", "hostname": "h", "os": "o", "version": "v", "wait_seconds": 999},
        "body.wait_seconds",
    ),
    ("/api/v1/agent/jobs/{job}/events", {"state": "exploded"}, "body.state"),
]


def _headers(server: Harness, who: str) -> dict[str, str]:
    if who == "admin":
        return server.admin
    if who == "agent":
        return server.agent_headers("fs1")
    return {}


@pytest.fixture
def ready(shared_server: Harness) -> Harness:
    return shared_server


def _path(server: Harness, path: str) -> str:
    return path.replace("{job}", "00000000000000000000000000000000")


@pytest.mark.parametrize(("method", "path", "body", "who"), BODY_ROUTES)
def test_unknown_field_is_refused(
    ready: Harness, method: str, path: str, body: dict[str, Any], who: str
) -> None:
    reply = ready.client.request(
        method, _path(ready, path), json={**body, "colour": "red"}, headers=_headers(ready, who)
    )
    assert reply.status_code == 422
    assert reply.json()["detail"] == "body.colour: unknown field; remove it (check its spelling)"


@pytest.mark.parametrize(("method", "path", "body", "who"), BODY_ROUTES)
def test_malformed_json_is_refused(
    ready: Harness, method: str, path: str, body: dict[str, Any], who: str
) -> None:
    headers = {**_headers(ready, who), "Content-Type": "application/json"}
    reply = ready.client.request(method, _path(ready, path), content=b"{not json", headers=headers)
    assert reply.status_code == 422
    assert "JSON" in reply.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body", "who"), BODY_ROUTES)
def test_a_list_instead_of_an_object_is_refused(
    ready: Harness, method: str, path: str, body: dict[str, Any], who: str
) -> None:
    reply = ready.client.request(
        method, _path(ready, path), json=[body], headers=_headers(ready, who)
    )
    assert reply.status_code == 422
    assert isinstance(reply.json()["detail"], str)


@pytest.mark.parametrize(("path", "body", "field"), BAD_VALUES)
def test_bad_values_name_the_field(
    ready: Harness, path: str, body: dict[str, Any], field: str
) -> None:
    who = next(w for _, p, _, w in BODY_ROUTES if p == path)
    reply = ready.client.post(_path(ready, path), json=body, headers=_headers(ready, who))
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"].startswith(field)


def test_policy_errors_say_what_is_expected(ready: Harness) -> None:
    body = {"name": "p", "schedule": "daily 02:00", "timezone": "Mars/Base"}
    reply = ready.client.post("/api/v1/policies", json=body, headers=ready.admin)
    assert "unknown time zone 'Mars/Base': use an IANA name" in reply.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs?limit=abc",
        "/api/v1/jobs?limit=0",
        "/api/v1/jobs?state=exploded",
    ],
)
def test_bad_query_parameters_are_refused(ready: Harness, path: str) -> None:
    reply = ready.client.get(path, headers=ready.admin)
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith("query.")


def test_every_route_with_a_body_is_in_the_table(ready: Harness) -> None:
    paths = ready.client.get("/openapi.json").json()["paths"]
    with_body = {
        (method.upper(), path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    table = {(m, p.replace("{job}", "{job_id}")) for m, p, _, _ in BODY_ROUTES}
    assert with_body == table


def test_every_request_model_forbids_unknown_fields(ready: Harness) -> None:
    spec = ready.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for operations in spec["paths"].values():
        for operation in operations.values():
            if "requestBody" not in operation:
                continue
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            name = ref.rsplit("/", 1)[1]
            assert schemas[name].get("additionalProperties") is False, name


def test_restore_before_needs_a_time_zone(ready: Harness) -> None:
    body = {"set": "s", "target": "/r", "before": "2026-03-01T00:00:00"}
    reply = ready.client.post("/api/v1/restores", json=body, headers=ready.admin)
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith("body.before: Input should have timezone info")
