"""Progress of a backup through the agent's write-behind storage, with the real engine.

The engine counts a pack as uploaded once ``put_file`` returns; the write-behind storage
returns as soon as it has accepted the pack, before sending it. A throttled job's progress
said 100 %, ETA 0, for as long as its last pack was being sent (the integration test
test_progress_follows_the_transfer_of_a_throttled_job saw it when the small tree pack went up
before the data pack). Here the data pack's upload is held until the test lets it go.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import BinaryIO

from tests.unit.agent.fake_server import FakeServer

from roost.agent.api import ServerApi
from roost.agent.progress import BackupEvents, Meter, UploadActivity
from roost.agent.reporting import JobReporter
from roost.agent.write_behind import WriteBehindBackend
from roost.engine.archiver import Archiver
from roost.engine.repository import Repository
from roost.storage.memory import MemoryBackend

SIZE = 1024 * 1024  # one file, one data pack (and a small tree pack)
WAIT = 10.0


class HeldBigPacks(MemoryBackend):
    """Stores a pack bigger than the file's half only once the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = threading.Event()
        self.gate = threading.Event()

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        if key.startswith("data/") and size > SIZE // 2:
            self.sending.set()
            assert self.gate.wait(WAIT)
        super().put_file(key, file, size, overwrite=overwrite)


def until(condition: object) -> None:
    assert callable(condition)
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_progress_counts_a_pack_once_the_write_behind_has_stored_it(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(SIZE))
    reporter = JobReporter(ServerApi(FakeServer().client()), "j")
    uploads = UploadActivity(reporter)  # wired as backup_job.run_backup wires it
    inner = HeldBigPacks()
    repo, _ = Repository.init(
        WriteBehindBackend(inner, on_accepted=uploads.pack_accepted), "passphrase"
    )
    uploads.meter = meter = Meter(reporter, total_bytes=SIZE, interval=3600.0)
    archiver = Archiver(repo, progress=BackupEvents(meter), workers=2, processes=0)
    backup = threading.Thread(target=archiver.run, args=([str(source)],), daemon=True)
    backup.start()

    assert inner.sending.wait(WAIT)  # accepted by the write-behind, now "on the wire"
    until(lambda: meter.bytes == SIZE and meter.backlog < SIZE // 2)  # the engine counted it
    during = meter.current()
    assert during.bytes_done < SIZE // 2, "the pack counted before it was stored"
    assert during.eta_seconds != 0.0
    assert all(found.size < SIZE // 2 for found in inner.list("data/"))  # not stored yet

    inner.gate.set()
    backup.join(WAIT)
    assert not backup.is_alive()
    assert meter.current().bytes_done == SIZE
