"""Meter: throttled progress events, rate and ETA from an injected clock, cancel points."""

from __future__ import annotations

import pytest
from tests.unit.agent.fake_server import FakeServer

from roost.agent.api import ServerApi
from roost.agent.progress import BackupEvents, Meter, RestoreEvents, UploadActivity
from roost.agent.reporting import JobCancelled, JobReporter
from roost.protocol.agent_api import JobEvent, Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def progress_events(server: FakeServer) -> list[Progress]:
    return [e.progress for e in server.events["j"] if e.progress is not None]


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def meter(server: FakeServer, clock: Clock, total: int | None = 1000) -> Meter:
    reporter = JobReporter(ServerApi(server.client()), "j")
    return Meter(reporter, total_bytes=total, clock=clock, interval=1.0)


def test_at_most_one_event_per_interval_with_rate_and_eta(server: FakeServer) -> None:
    clock = Clock()
    m = meter(server, clock)
    events = BackupEvents(m)
    for now, size in [(0.25, 100), (0.5, 100), (1.0, 50), (1.5, 50), (2.0, 200)]:
        clock.now = now
        events.bytes_done(size)
    events.file_done(b"/f", "new")
    assert progress_events(server) == [
        Progress(files_done=0, bytes_done=250, rate=250.0, eta_seconds=3.0),
        Progress(files_done=0, bytes_done=500, rate=250.0, eta_seconds=2.0),
    ]
    m.flush()
    assert progress_events(server)[-1] == Progress(
        files_done=1, bytes_done=500, rate=250.0, eta_seconds=2.0
    )


def test_no_eta_without_a_total(server: FakeServer) -> None:
    clock = Clock()
    m = meter(server, clock, total=None)
    clock.now = 2.0
    m.add(files=1, size=100)
    assert progress_events(server) == [Progress(files_done=1, bytes_done=100, rate=50.0)]


def test_eta_never_negative_when_more_was_read_than_estimated(server: FakeServer) -> None:
    clock = Clock()
    m = meter(server, clock, total=10)
    clock.now = 1.0
    m.add(size=50)
    assert progress_events(server)[0].eta_seconds == 0.0


def test_cancel_answer_raises_from_the_callback(server: FakeServer) -> None:
    server.cancel_when = lambda _job, _event: "cancelled by admin"
    clock = Clock()
    events = BackupEvents(meter(server, clock))
    clock.now = 1.0
    with pytest.raises(JobCancelled) as err:
        events.bytes_done(1)
    assert (err.value.reason, err.value.state) == ("cancelled by admin", "cancelled")
    with pytest.raises(JobCancelled):  # and at every later callback, without asking again
        events.file_done(b"/f", "new")
    assert len(server.events["j"]) == 1


def test_final_flush_can_skip_the_cancel_check(server: FakeServer) -> None:
    server.cancel_when = lambda _job, _event: "too late"
    m = meter(server, Clock())
    m.flush(check_cancel=False)
    assert len(progress_events(server)) == 1


def test_restore_warnings_become_log_lines(server: FakeServer) -> None:
    clock = Clock()
    m = meter(server, clock)
    events = RestoreEvents(m)
    events.warning(b"/t/caf\xe9", "cannot set owner")
    m.reporter.send(JobEvent())
    assert events.warnings == 1
    lines = [line for e in server.events["j"] for line in e.log]
    assert [(line.level, line.message) for line in lines] == [
        ("warning", "/t/caf\\xe9: cannot set owner")
    ]


def test_uploads_keep_progress_and_cancel_alive(server: FakeServer) -> None:
    clock = Clock()
    reporter = JobReporter(ServerApi(server.client()), "j")
    uploads = UploadActivity(reporter)
    uploads(65536)  # before the meter exists: only a cancel check
    assert progress_events(server) == []
    uploads.meter = Meter(reporter, total_bytes=10, clock=clock, interval=1.0)
    uploads.meter.add(files=1, size=10)  # reading done within the first second
    clock.now = 1.5  # the archiver now only waits for uploads
    uploads(65536)
    assert progress_events(server) == [
        Progress(files_done=1, bytes_done=10, rate=10 / 1.5, eta_seconds=0.0)
    ]
    server.cancel_when = lambda _job, _event: "stopped: the backup window closed"
    clock.now = 3.0
    with pytest.raises(JobCancelled, match="backup window closed"):
        uploads(65536)


def test_a_held_meter_sends_nothing_until_the_estimate_releases_it(server: FakeServer) -> None:
    from roost.agent.backup_job import EstimateWhenCounted

    clock = Clock()
    m = meter(server, clock, total=None)
    m.hold()
    estimate = EstimateWhenCounted(m.reporter, m, lambda size: size / 100)
    for now in (1.0, 2.0, 3.0):
        clock.now = now
        m.add(files=1, size=100)
    assert server.events.get("j", []) == []  # nothing went out
    estimate.scan_finished(5, 1000)  # the count is done: the estimate, then progress
    clock.now = 4.0
    m.add(files=1, size=100)
    kinds = ["estimate" if e.estimate else "progress" for e in server.events["j"]]
    assert kinds == ["estimate", "progress"]
    first = server.events["j"][0].estimate
    assert first is not None and (first.files, first.bytes, first.seconds) == (5, 1000, 10.0)
    assert progress_events(server) == [
        Progress(files_done=4, bytes_done=400, rate=100.0, eta_seconds=6.0)
    ]


def test_a_pack_counts_when_stored_not_when_the_uploads_accept_it(server: FakeServer) -> None:
    # The engine takes a pack out of its backlog once the storage accepts it; the agent's
    # write-behind storage accepts it before sending it (a throttled job said 100 %, ETA 0,
    # while its last pack was still being sent).
    clock = Clock()
    m = meter(server, clock, total=1000)
    events = BackupEvents(m)
    events.backlog(1000)
    events.bytes_done(1000)  # all read, in a pack not stored yet
    stored = m.pack_accepted()  # the write-behind took the pack ...
    events.backlog(0)  # ... so the engine counts it as uploaded
    clock.now = 1.0
    m.add()  # an upload piece
    assert progress_events(server) == [Progress(files_done=0, bytes_done=0, rate=0.0)]
    stored()  # it reached the server
    clock.now = 2.0
    m.add()
    assert progress_events(server)[-1] == Progress(
        files_done=0, bytes_done=1000, rate=500.0, eta_seconds=0.0
    )


@pytest.mark.parametrize("first", ["older", "newer"])
def test_each_pack_in_flight_is_held_until_it_is_stored(server: FakeServer, first: str) -> None:
    m = meter(server, Clock(), total=600)
    events = BackupEvents(m)
    events.backlog(300)
    events.bytes_done(300)
    older = m.pack_accepted()
    events.backlog(0)
    events.backlog(300)
    events.bytes_done(300)  # the next pack, while the first one is still on its way
    newer = m.pack_accepted()
    events.backlog(0)
    assert m.current().bytes_done == 0
    if first == "older":
        older()
        assert m.current().bytes_done == 300
    else:
        newer()
        assert m.current().bytes_done == 0  # the older pack is still on its way
    (newer if first == "older" else older)()
    assert m.current().bytes_done == 600


def test_uploads_hand_accepted_packs_to_the_meter(server: FakeServer) -> None:
    reporter = JobReporter(ServerApi(server.client()), "j")
    uploads = UploadActivity(reporter)
    uploads.pack_accepted("data/ab/p0")()  # before the meter exists: nothing to hold
    uploads.meter = m = Meter(reporter, total_bytes=15, clock=Clock(), interval=1.0)
    m.set_backlog(10)
    m.add(size=10)
    stored = uploads.pack_accepted("data/ab/p1")
    m.set_backlog(0)
    m.add(size=5)  # an unchanged file, read meanwhile, waits for the pack too
    assert m.current().bytes_done == 0
    stored()
    assert m.current().bytes_done == 15
