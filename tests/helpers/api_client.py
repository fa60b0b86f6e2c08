"""A tiny typed client for the admin HTTP API of a real `roost server` (docs/control-plane.md).

``AdminClient.login(url, password, fingerprint=...)`` logs in as ``admin``; each method is one
route and returns the decoded JSON. An answer with an unexpected status raises
:class:`ApiError` carrying the status and the server's ``detail``, so a test can assert the
exact refusal (``with pytest.raises(ApiError) as err: ...; err.value.status == 409``).

``wait_job`` polls ``GET /jobs/{id}`` every 0.2 s until the job is in one of the given states
(or, by default, any final state) or the deadline passes; ``diagnose`` (e.g. the processes'
stderr tails) is appended to the failure message.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx

Json = dict[str, Any]

FINAL_STATES = frozenset(
    {"succeeded", "succeeded_with_errors", "failed", "aborted", "cancelled", "skipped"}
)
POLL_INTERVAL = 0.2


class ApiError(AssertionError):
    """The API answered with a status the caller did not expect."""

    def __init__(self, method: str, path: str, status: int, detail: Any) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        super().__init__(f"{method} {path} -> {status}: {detail!r}")


def pinned_context(url: str, fingerprint: str) -> ssl.SSLContext:
    """Trust exactly the server's certificate, after checking its SHA-256 fingerprint (the
    ``AB:CD:...`` form the server prints); its host name is not checked (self-signed)."""
    parsed = httpx.URL(url)
    pem = ssl.get_server_certificate((parsed.host, parsed.port or 443))
    seen = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    wanted = fingerprint.replace(":", "").lower()
    if seen != wanted:
        raise AssertionError(f"server certificate fingerprint {seen} is not the pinned {wanted}")
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False
    return context


class AdminClient:
    def __init__(self, client: httpx.Client) -> None:
        self.http = client

    @classmethod
    def login(
        cls,
        url: str,
        password: str,
        *,
        username: str = "admin",
        fingerprint: str | None = None,
        timeout: float = 30.0,
    ) -> AdminClient:
        """Log in; with ``fingerprint`` an https:// server is trusted only if it matches."""
        pinned = fingerprint is not None and url.startswith("https://")
        verify: ssl.SSLContext | bool = pinned_context(url, fingerprint or "") if pinned else True
        http = httpx.Client(base_url=url.rstrip("/") + "/api/v1", verify=verify, timeout=timeout)
        client = cls(http)
        reply = client.call("POST", "/login", json={"username": username, "password": password})
        http.headers["Authorization"] = f"Bearer {reply['token']}"
        return client

    def close(self) -> None:
        self.http.close()

    # -- plumbing ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        return self.http.request(method, path, json=json, params=params)

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        expect: Iterable[int] = (200, 201, 204),
    ) -> Any:
        """One request; the decoded body (None for 204), or ApiError on another status."""
        response = self.request(method, path, json=json, params=params)
        if response.status_code not in set(expect):
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(method, path, response.status_code, detail)
        return None if response.status_code == 204 or not response.content else response.json()

    # -- routes ------------------------------------------------------------------------------

    def create_token(self, **body: Any) -> str:
        return str(self.call("POST", "/tokens", json=body)["token"])

    def agents(self) -> list[Json]:
        result: list[Json] = self.call("GET", "/agents")
        return result

    def agent(self, name: str) -> Json:
        for agent in self.agents():
            if agent["name"] == name:
                return agent
        raise KeyError(f"no agent named {name!r}")

    def disable_agent(self, name: str) -> Json:
        result: Json = self.call("POST", f"/agents/{name}/disable")
        return result

    def enable_agent(self, name: str) -> Json:
        result: Json = self.call("POST", f"/agents/{name}/enable")
        return result

    def create_policy(self, name: str, schedule: str = "daily 02:00", **body: Any) -> Json:
        result: Json = self.call(
            "POST", "/policies", json={"name": name, "schedule": schedule, **body}
        )
        return result

    def create_set(self, name: str, agent: str, paths: list[str], **body: Any) -> Json:
        payload = {"name": name, "agent": agent, "paths": paths, **body}
        result: Json = self.call("POST", "/sets", json=payload)
        return result

    def backup_set(self, name: str) -> Json:
        result: Json = self.call("GET", f"/sets/{name}")
        return result

    def backup_now(self, set_name: str, *, expect: Iterable[int] = (201,)) -> Json:
        result: Json = self.call("POST", f"/sets/{set_name}/backup", expect=expect)
        return result

    def jobs(self, **filters: Any) -> list[Json]:
        result: list[Json] = self.call("GET", "/jobs", params=filters)
        return result

    def job(self, job_id: str) -> Json:
        result: Json = self.call("GET", f"/jobs/{job_id}")
        return result

    def missed(self, job_id: str) -> list[Json]:
        result: list[Json] = self.call("GET", f"/jobs/{job_id}/missed")
        return result

    def cancel(self, job_id: str) -> Json:
        result: Json = self.call("POST", f"/jobs/{job_id}/cancel")
        return result

    def snapshots(self, set_name: str) -> list[Json]:
        result: list[Json] = self.call("GET", f"/sets/{set_name}/snapshots")
        return result

    def ls(self, set_name: str, snapshot: str = "latest", path: str = "/") -> list[Json]:
        result: list[Json] = self.call(
            "GET", f"/sets/{set_name}/snapshots/{snapshot}/ls", params={"path": path}
        )
        return result

    def restore(self, set_name: str, target: str, **body: Any) -> Json:
        result: Json = self.call(
            "POST", "/restores", json={"set": set_name, "target": target, **body}
        )
        return result

    # -- waiting -----------------------------------------------------------------------------

    def wait_job(
        self,
        job_id: str,
        states: Iterable[str] = FINAL_STATES,
        *,
        timeout: float = 60.0,
        diagnose: Callable[[], str] = lambda: "",
    ) -> Json:
        """Poll the job until its state is one of ``states``; fail with its last view."""
        wanted = frozenset(states)
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in wanted:
                return job
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"job {job_id} is {job['state']!r} (reason {job['reason']!r}) after "
                    f"{timeout:g} s; expected one of {sorted(wanted)}\n"
                    f"job log: {[line['message'] for line in job.get('log', [])]}\n{diagnose()}"
                )
            time.sleep(POLL_INTERVAL)

    def wait_for(
        self,
        what: str,
        probe: Callable[[], Any],
        *,
        timeout: float = 60.0,
        diagnose: Callable[[], str] = lambda: "",
    ) -> Any:
        """Poll ``probe`` every 0.2 s until it returns something truthy; return it."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what}\n{diagnose()}"
                )
            time.sleep(POLL_INTERVAL)
