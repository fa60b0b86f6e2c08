"""JobReporter: log buffering, protocol limits, final-event retries, cancel and gone jobs."""

from __future__ import annotations

import httpx
import pytest
from tests.unit.agent.fake_server import FakeServer, detail

from roost.agent.api import ServerApi
from roost.agent.reporting import JobCancelled, JobReporter, Outcome, describe_error
from roost.errors import StorageError
from roost.protocol.agent_api import JobEvent, MissedFile


class Waits(list[float]):
    def __call__(self, seconds: float) -> bool:
        self.append(seconds)
        return False  # not stopped


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def reporter(server: FakeServer, waits: Waits | None = None, retry: float = 3600.0) -> JobReporter:
    return JobReporter(
        ServerApi(server.client()),
        "j",
        wait=waits if waits is not None else Waits(),
        final_retry_seconds=retry,
    )


def test_log_lines_ride_on_the_next_event_in_order(server: FakeServer) -> None:
    r = reporter(server)
    r.log("one")
    r.log("two", "warning")
    r.send(JobEvent(state="running"))
    r.send()
    first, second = server.events["j"]
    assert [(x.level, x.message) for x in first.log] == [("info", "one"), ("warning", "two")]
    assert first.state == "running"
    assert second.log == []


def test_more_log_lines_than_one_event_holds_go_first(server: FakeServer) -> None:
    r = reporter(server)
    for n in range(1500):
        r.log(f"line {n}")
    r.send(JobEvent(state="running"))
    events = server.events["j"]
    assert [(e.state, len(e.log)) for e in events] == [(None, 1000), ("running", 500)]
    assert events[1].log[-1].message == "line 1499"


def test_every_missed_file_reaches_the_server_in_chunks(server: FakeServer) -> None:
    missed = [MissedFile(path=f"/f{n}", reason="locked") for n in range(25000)]
    assert reporter(server).finish(Outcome("succeeded_with_errors", missed=missed))
    events = server.events["j"]
    assert [(e.state, len(e.missed)) for e in events] == [
        (None, 10000),
        (None, 10000),
        ("succeeded_with_errors", 5000),
    ]
    assert [m for e in events for m in e.missed] == missed


def test_final_event_is_retried_with_growing_waits(server: FakeServer) -> None:
    answers = iter([detail(503, "busy"), detail(502, "proxy")])
    server.before = lambda _request: next(answers, None)
    waits = Waits()
    r = reporter(server, waits)
    r.log("done soon")
    assert r.finish(Outcome("succeeded"))
    assert waits == [1.0, 2.0]
    assert [(e.state, [x.message for x in e.log]) for e in server.events["j"]] == [
        ("succeeded", ["done soon"])
    ]


def test_final_event_survives_network_failures(server: FakeServer) -> None:
    calls = []

    def drop_first(request: httpx.Request) -> httpx.Response | None:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("connection reset", request=request)
        return None

    server.before = drop_first
    waits = Waits()
    assert reporter(server, waits).finish(Outcome("failed", error="x"))
    assert waits == [1.0]
    assert server.states("j") == ["failed"]


def test_final_event_refused_for_good_is_not_retried(server: FakeServer) -> None:
    server.before = lambda _request: detail(422, "bad state")
    waits = Waits()
    assert not reporter(server, waits).finish(Outcome("succeeded"))
    assert waits == []


def test_final_event_gives_up_after_its_time(server: FakeServer) -> None:
    server.before = lambda _request: detail(503, "down")
    waits = Waits()
    assert not reporter(server, waits, retry=0.0).finish(Outcome("succeeded"))
    assert waits == []


def test_lost_progress_event_keeps_its_log_lines(server: FakeServer) -> None:
    down = [True]

    def maybe_down(request: httpx.Request) -> httpx.Response | None:
        if down[0]:
            raise httpx.ConnectError("unreachable", request=request)
        return None

    server.before = maybe_down
    r = reporter(server)
    r.log("kept")
    assert not r.send(JobEvent())
    down[0] = False
    assert r.send(JobEvent())
    assert [x.message for x in server.events["j"][0].log] == ["kept"]


def test_a_job_the_server_forgot_is_aborted(server: FakeServer) -> None:
    server.before = lambda _request: detail(409, "job j is aborted")
    r = reporter(server)
    assert not r.send(JobEvent())
    with pytest.raises(JobCancelled) as err:
        r.raise_if_cancelled()
    assert (err.value.state, err.value.reason) == (
        "aborted",
        "the server no longer tracks this job (job j is aborted)",
    )


def test_cancel_without_a_reason_gets_one(server: FakeServer) -> None:
    server.before = lambda _request: httpx.Response(200, json={"cancel": True})
    r = reporter(server)
    r.send()
    with pytest.raises(JobCancelled, match="cancelled by an administrator"):
        r.raise_if_cancelled()


def test_messages_are_made_safe_and_clipped(server: FakeServer) -> None:
    r = reporter(server)
    r.log("name caf\udce9")
    r.log("x" * 5000)
    r.send()
    lines = [x.message for x in server.events["j"][0].log]
    assert lines[0] == "name caf\\xe9"
    assert len(lines[1]) == 4000 and lines[1].endswith("...")


def test_describe_error() -> None:
    assert describe_error(StorageError("disk\nfull")) == "disk full"
    assert describe_error(ValueError("bad")) == "ValueError: bad"
    assert describe_error(KeyError()) == "KeyError"
    assert describe_error(OSError("caf\udce9")) == "OSError: caf\\xe9"
