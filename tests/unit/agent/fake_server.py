"""The agent routes of the control plane over in-memory state, served by httpx.MockTransport.

Storage routes map onto a real Backend (a MemoryBackend holding a real repository), with the
contract's status codes; job events are recorded per job; polls are answered from a queue.
Hooks let a test make the server cancel a job, refuse requests or fail storage writes.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import asdict
from urllib.parse import unquote

import httpx

from roost.engine.repository import Repository
from roost.errors import ObjectExists, ObjectNotFound, StorageError
from roost.protocol.agent_api import (
    EnrollRequest,
    JobAssignment,
    JobEvent,
    PollRequest,
)
from roost.storage.base import Backend
from roost.storage.memory import MemoryBackend

BASE = "https://roost.test/api/v1/agent"
AGENT_ID = "agent-1"
SECRET = "s3cret-s3cret"
TOKEN = "enroll-token-123"
_RANGE = re.compile(r"bytes=(\d+)-(\d+)")

Hook = Callable[[httpx.Request], httpx.Response | None]


def detail(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"detail": message})


class FakeServer:
    def __init__(self, storage: Backend | None = None, *, leases_only: bool = True) -> None:
        self.storage = storage or MemoryBackend("fake-server")
        # The real server lets agents overwrite and delete only leases/; the storage contract
        # suite turns that policy off to exercise the backend's mechanics on any key.
        self.leases_only = leases_only
        self._repo: Repository | None = None
        self.events: dict[str, list[JobEvent]] = defaultdict(list)
        self.polls: list[PollRequest] = []
        self.poll_answers: deque[list[JobAssignment]] = deque()
        self.enrollments: list[EnrollRequest] = []
        # Given (job id, event), return a reason to ask the agent to cancel the job.
        self.cancel_when: Callable[[str, JobEvent], str | None] | None = None
        self.before: Hook | None = None  # runs first; a response it returns wins
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            self._repo, _ = Repository.init(self.storage, "server-passphrase")
        return self._repo

    def client(self, authorization: str = f"Bearer {AGENT_ID}.{SECRET}") -> httpx.Client:
        return httpx.Client(
            transport=httpx.MockTransport(self.handle),
            base_url=BASE,
            headers={"Authorization": authorization},
        )

    def states(self, job_id: str) -> list[str]:
        """The kind of every event of a job in order: a state, or estimate/progress/log."""
        return [_kind(event) for event in self.events[job_id]]

    # -- routing --------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode().split("?")[0].removeprefix("/api/v1/agent")
        with self._lock:
            self.requests.append((request.method, path))
        if self.before is not None and (answer := self.before(request)) is not None:
            return answer
        if path == "/enroll" and request.method == "POST":
            return self._enroll(request)
        if request.headers.get("Authorization") != f"Bearer {AGENT_ID}.{SECRET}":
            return detail(401, "invalid agent credentials")
        if path == "/poll" and request.method == "POST":
            return self._poll(request)
        if path == "/repository" and request.method == "GET":
            return self._repository()
        if match := re.fullmatch(r"/jobs/([^/]+)/events", path):
            return self._event(match.group(1), request)
        if path == "/storage" and request.method == "GET":
            return self._list(request)
        if path.startswith("/storage/"):
            return self._object(request, unquote(path.removeprefix("/storage/")))
        return detail(404, f"no route {request.method} {path}")

    def _enroll(self, request: httpx.Request) -> httpx.Response:
        body = EnrollRequest.model_validate_json(request.read())
        if body.token != TOKEN:
            return detail(401, "the enrollment token is invalid, expired or used up")
        self.enrollments.append(body)
        return httpx.Response(
            200, json={"agent_id": AGENT_ID, "secret": SECRET, "organisation": "default"}
        )

    def _poll(self, request: httpx.Request) -> httpx.Response:
        self.polls.append(PollRequest.model_validate_json(request.read()))
        jobs = self.poll_answers.popleft() if self.poll_answers else []
        payload = {
            "jobs": [job.model_dump(mode="json") for job in jobs],
            "server_time": "2026-01-01T00:00:00+00:00",
        }
        return httpx.Response(200, json=payload)

    def _repository(self) -> httpx.Response:
        repo = self.repo
        return httpx.Response(
            200,
            json={"master_key": repo.key.master.to_json(), "config": asdict(repo.config)},
        )

    def _event(self, job_id: str, request: httpx.Request) -> httpx.Response:
        event = JobEvent.model_validate_json(request.read())
        with self._lock:
            self.events[job_id].append(event)
        reason = self.cancel_when(job_id, event) if self.cancel_when else None
        return httpx.Response(200, json={"cancel": reason is not None, "cancel_reason": reason})

    # -- storage --------------------------------------------------------------------------

    def _list(self, request: httpx.Request) -> httpx.Response:
        try:
            found = list(self.storage.list(request.url.params.get("prefix", "")))
        except StorageError as exc:
            return detail(400, str(exc))
        return httpx.Response(200, json=[{"key": i.key, "size": i.size} for i in found])

    def _object(self, request: httpx.Request, key: str) -> httpx.Response:
        try:
            return self._object_call(request, key)
        except ObjectNotFound as exc:
            return detail(404, str(exc))
        except ObjectExists as exc:
            return detail(412, str(exc))
        except StorageError as exc:
            return detail(400, str(exc))

    def _object_call(self, request: httpx.Request, key: str) -> httpx.Response:
        method = request.method
        if method == "HEAD":
            size = self.storage.stat(key).size
            return httpx.Response(200, headers={"Content-Length": str(size)})
        if method == "GET":
            return self._get(request, key)
        if method == "PUT":
            overwrite = request.headers.get("X-Roost-Overwrite") == "1"
            if overwrite and self.leases_only and not key.startswith("leases/"):
                return detail(403, "only leases/ objects may be overwritten")
            self.storage.put(key, request.read(), overwrite=overwrite)
            return httpx.Response(201)
        if method == "DELETE":
            if self.leases_only and not key.startswith("leases/"):
                return detail(403, "agents may only delete leases/ objects")
            self.storage.delete(key)
            return httpx.Response(204)
        return detail(405, "method not allowed")

    def _get(self, request: httpx.Request, key: str) -> httpx.Response:
        data = self.storage.get(key)
        wanted = request.headers.get("Range")
        if wanted is None:
            return httpx.Response(200, content=data)
        match = _RANGE.fullmatch(wanted)
        if match is None:
            return detail(400, f"bad range {wanted!r}")
        start, end = int(match.group(1)), int(match.group(2))
        if start >= len(data):
            return httpx.Response(416, headers={"Content-Range": f"bytes */{len(data)}"})
        return httpx.Response(206, content=data[start : end + 1])


def _kind(event: JobEvent) -> str:
    if event.state is not None:
        return event.state
    if event.estimate is not None:
        return "estimate"
    if event.progress is not None:
        return "progress"
    if event.missed:
        return "missed"
    return "log"
