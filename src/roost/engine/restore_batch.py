"""Writing restored files in batches, in threads or in worker processes.

The restorer walks the snapshot and creates directories; regular files go out in batches of
consecutive files (tree order, which is also the order in which a backup packed their
chunks). For each batch:

* blob reads are coalesced: consecutive chunks that lie back to back (or nearly) in the same
  pack are fetched with one ranged read of at most ``MAX_READ`` bytes instead of one per
  blob;
* every chunk is decrypted, decompressed and verified against its keyed id, as always;
* each file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and its metadata is applied
  through the open descriptor (owner, xattrs, mode, times: the order of
  :func:`roost.engine.fsmeta.apply_metadata`), which saves a path lookup per step; the
  restorer leaves out the owner and mode when the file is created with them already (the
  job says so, see :data:`FileJob`), which saves two system calls per file;
* a file that cannot be written completely is removed, never left truncated.

A batch reports one :data:`FileOutcome` per file; the restorer, in its main thread, counts
them, reports progress and warnings, and redoes a file on its own robust path (every copy of
every blob, index reload after a concurrent prune) when the batch could not read or verify
one of its chunks (``RETRY``) or found the name taken (``EXISTS``).

Batches run in threads (any backend, small restores) or, for a local repository, in worker
processes: each has its own GIL, so decrypting, decompressing, hashing and the per-file
system calls of two batches really run in parallel. A worker is a plain interpreter (as the
backup's, see :mod:`roost.engine.procreader`) talking pickles over a socket pair: it gets the
key material once over the socket, opens the repository directory itself, answers batches
in the order it got them and dies with its parent.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from roost.engine import compress, workerproc
from roost.engine.crypto import Key, MasterKey
from roost.engine.fsmeta import _warning as meta_warning
from roost.engine.pack import BLOB_TYPES, blob_aad
from roost.errors import CorruptObject, RoostError, StorageError

MAX_READ = 8 * 1024 * 1024  # one coalesced pack read
MAX_GAP = 64 * 1024  # bytes of unrelated blobs worth reading through rather than seeking
BATCH_FILES = 256
BATCH_BYTES = 16 * 1024 * 1024  # raw content size of one batch (a bigger file is alone)

# A chunk to read: (blob id, pack storage key, blob type, offset, length, raw length,
# compression method)
Chunk = tuple[bytes, str, int, int, int, int, int]

# A file to write: (path, size, the mode to create it with, the mode to set after the owner
# and xattrs or None (created with it), the owner (uid, gid) to set or None (it has it, or
# owners are not restored), atime_ns, mtime_ns, xattrs, extents or None, chunks)
FileJob = tuple[
    bytes,
    int,
    int,
    int | None,
    tuple[int, int] | None,
    int,
    int,
    list[tuple[bytes, bytes]],
    list[tuple[int, int]] | None,
    list[Chunk],
]

OK, FAILED, RETRY, EXISTS = 0, 1, 2, 3
# (status, bytes written, warnings or the failure message)
FileOutcome = tuple[int, int, list[str]]


class RangeReader(Protocol):
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...


@dataclass(frozen=True)
class WorkerSetup:
    master: MasterKey
    repo_root: str


class _ReadProblem(Exception):
    """A chunk could not be read or verified here; the restorer retries the whole file."""


class _NameTaken(Exception):
    """The file's name exists already; the restorer resolves the conflict and retries."""


class _Reads:
    """Serves the chunks of a batch from coalesced ranged reads, one range at a time."""

    def __init__(self, key: Key, backend: RangeReader, jobs: list[FileJob]) -> None:
        self._key = key
        self._backend = backend
        # plan: for each chunk in batch order, the index of its read range
        self._ranges: list[tuple[str, int, int]] = []
        self._range_of: list[int] = []
        pack, start, end = "", 0, 0
        for job in jobs:
            for _id, key_, _type, offset, length, _raw, _comp in job[9]:
                if (
                    self._ranges
                    and key_ == pack
                    and end <= offset <= end + MAX_GAP
                    and offset + length - start <= MAX_READ
                ):
                    end = offset + length
                    self._ranges[-1] = (pack, start, end)
                else:
                    pack, start, end = key_, offset, offset + length
                    self._ranges.append((pack, start, end))
                self._range_of.append(len(self._ranges) - 1)
        self._position = 0  # chunks served so far
        self._loaded = -1
        self._data = memoryview(b"")
        self._failed: set[int] = set()

    def skip(self, count: int) -> None:
        """Skip the remaining ``count`` chunks of a file that failed."""
        self._position += count

    def next(self, chunk: Chunk) -> bytes:
        """The plaintext of ``chunk``, which must be the next one in batch order."""
        which = self._range_of[self._position]
        self._position += 1
        if which in self._failed:
            raise _ReadProblem
        if which != self._loaded:
            pack, start, end = self._ranges[which]
            try:
                raw = self._backend.get_range(pack, start, end - start)
            except StorageError as exc:  # missing pack, I/O error: the robust path decides
                self._failed.add(which)
                raise _ReadProblem from exc
            self._loaded, self._data = which, memoryview(raw)
            if len(raw) != end - start:
                self._failed.add(which)
                raise _ReadProblem
        blob_id, _pack, blob_type, offset, length, raw_length, method = chunk
        start = self._ranges[which][1]
        raw_blob = self._data[offset - start : offset - start + length]
        try:
            return decode(self._key, blob_id, blob_type, raw_blob, raw_length, method)
        except CorruptObject as exc:  # maybe another copy is intact: the robust path decides
            raise _ReadProblem from exc


def decode(
    key: Key, blob_id: bytes, blob_type: int, raw: bytes | memoryview, raw_length: int, method: int
) -> bytes:
    """Decrypt, decompress and verify one blob (as Repository.decode_blob)."""
    what = f"{BLOB_TYPES.get(blob_type, '?')} blob {blob_id.hex()[:16]}"
    payload = key.decrypt(raw, blob_aad(blob_type, blob_id), what)
    plain = compress.decompress(method, payload, raw_length)
    if len(plain) != raw_length or key.chunk_id(plain) != blob_id:
        raise CorruptObject(f"{what} does not match its id")
    return plain


def write_batch(key: Key, backend: RangeReader, jobs: list[FileJob]) -> list[FileOutcome]:
    """Create and fill every file of ``jobs``; one outcome per file, in order."""
    reads = _Reads(key, backend, jobs)
    return [_write_one(reads, job) for job in jobs]


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_one(reads: _Reads, job: FileJob) -> FileOutcome:
    path, size, create_mode, _mode, _owner, _atime, _mtime, _xattrs, extents, chunks = job
    try:
        fd = os.open(path, _CREATE, create_mode)
    except FileExistsError:
        reads.skip(len(chunks))
        return EXISTS, 0, []
    except OSError as exc:
        reads.skip(len(chunks))
        return FAILED, 0, [f"cannot write: {exc.strerror}"]
    done = 0
    written = 0
    try:
        writer = None if extents is None else ExtentWriter(fd, extents)
        for chunk in chunks:
            data = reads.next(chunk)
            done += 1
            if writer is None:  # dense: back to back
                _pwrite_all(fd, data, written)
            else:
                writer.write(data)
            written += len(data)
        if extents is not None or written != size:
            os.ftruncate(fd, size)  # recreates trailing holes, too
        warnings = _apply_metadata(fd, job)
    except BaseException as exc:
        reads.skip(len(chunks) - done - (1 if isinstance(exc, _ReadProblem) else 0))
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)  # never leave a truncated file that looks restored
        if isinstance(exc, _ReadProblem):
            return RETRY, 0, []
        if isinstance(exc, OSError):
            return FAILED, 0, [f"cannot write: {exc.strerror}"]
        if isinstance(exc, RoostError):
            return FAILED, 0, [str(exc)]
        raise
    os.close(fd)
    return OK, written, warnings


def _apply_metadata(fd: int, job: FileJob) -> list[str]:
    """fsmeta.apply_metadata through the descriptor: owner, xattrs, mode, times (owner and
    mode only when the job asks for them)."""
    path, _size, _create_mode, mode, owner, atime_ns, mtime_ns, xattrs, _extents, _chunks = job
    warnings: list[str] = []
    if owner is not None:
        try:
            os.fchown(fd, *owner)
        except OSError as exc:
            warnings.append(meta_warning(path, f"set owner {owner[0]}:{owner[1]}", exc))
    for name, value in xattrs:
        try:
            os.setxattr(fd, name, value)
        except OSError as exc:
            warnings.append(meta_warning(path, f"set xattr {name!r}", exc))
    if mode is not None:
        try:
            os.fchmod(fd, mode)
        except OSError as exc:
            warnings.append(meta_warning(path, f"set mode {mode:04o}", exc))
    try:
        os.utime(fd, ns=(atime_ns, mtime_ns))
    except OSError as exc:
        warnings.append(meta_warning(path, "set times", exc))
    return warnings


class ExtentWriter:
    """Writes a file's content stream back to back, or into its data extents if sparse."""

    def __init__(self, fd: int, extents: list[tuple[int, int]] | None) -> None:
        self._fd = fd
        self._extents = list(extents) if extents is not None else None
        self._offset = 0  # next write position for a dense file
        self._index = 0

    def write(self, data: bytes) -> None:
        if self._extents is None:
            _pwrite_all(self._fd, data, self._offset)
            self._offset += len(data)
            return
        view = memoryview(data)
        while view:
            if self._index >= len(self._extents):
                raise RoostError("file content is longer than its recorded data extents")
            start, length = self._extents[self._index]
            take = min(len(view), length - self._offset)
            _pwrite_all(self._fd, view[:take], start + self._offset)
            view = view[take:]
            self._offset += take
            if self._offset == length:
                self._index, self._offset = self._index + 1, 0


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    done = os.pwrite(fd, data, offset)
    if done == len(data):
        return
    view = memoryview(data)
    while done < len(view):
        more = os.pwrite(fd, view[done:], offset + done)
        if more <= 0:
            raise OSError(errno.EIO, "short write")
        done += more


# -- worker processes ------------------------------------------------------------------------


def run_worker(fd: str) -> None:
    """The worker process: write each batch it receives and answer with its outcomes."""
    conn, setup = workerproc.connect(fd)
    from roost.storage.local import LocalBackend

    key, backend = Key(setup.master), LocalBackend(Path(setup.repo_root))
    gc.freeze()  # what is alive now stays: the collector need not walk it for every batch
    try:
        while (jobs := conn.recv()) is not None:
            conn.send(("done", write_batch(key, backend, jobs)))
    except EOFError:
        return
    except BaseException as exc:  # the restore must fail with the real cause
        workerproc.report_failure(conn, exc)


class WorkerDied(Exception):
    """A worker process ended without answering (killed, out of memory)."""


class Worker:
    """A worker process and the main process's end of its socket; answers come in order."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.process, self.conn = workerproc.spawn(__name__, setup)
        self.pending = 0

    def send(self, jobs: list[FileJob]) -> None:
        try:
            self.conn.send(jobs)
        except OSError as exc:
            raise WorkerDied from exc
        self.pending += 1

    def receive(self) -> list[FileOutcome]:
        """The outcomes of the oldest batch sent and not yet received."""
        try:
            kind, payload = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerDied from exc
        self.pending -= 1
        if kind == "failed":
            raise payload
        outcomes: list[FileOutcome] = payload
        return outcomes

    def stop(self, *, kill: bool = False) -> None:
        with contextlib.suppress(OSError):
            if kill:
                self.process.kill()
            else:
                self.conn.send(None)
        workerproc.stop(self.process, self.conn)


__all__ = [
    "BATCH_BYTES",
    "BATCH_FILES",
    "EXISTS",
    "FAILED",
    "OK",
    "RETRY",
    "Chunk",
    "ExtentWriter",
    "FileJob",
    "FileOutcome",
    "Worker",
    "WorkerDied",
    "WorkerSetup",
    "decode",
    "run_worker",
    "write_batch",
]
