"""Scanning regular files in batches, in worker processes: the way around the GIL.

Threads serialise the per-file Python work (lstat, xattrs, open, read, chunk, hash, compress)
on one core: profiles showed a full backup using about one core while restic used
two. So the walker only lists directories (``scandir`` tells regular files apart without a
``stat``) and hands the regular files, in batches, to worker processes, each with its own
interpreter. For every file a worker does the whole per-file job: ``lstat``, the comparison
with the parent snapshot's entry (an unchanged file is not opened), xattrs, reading and
chunking with the same :class:`FileReader` the threads use, hashing and compressing.

Deduplication and encryption stay in the main process, and data crosses the pipe in few big
pieces (shipping every blob as its own object cost the main process more than the walk).
Per batch, over the worker's pipe:

1. ``scan``: the files come in groups, one per directory, with the parent snapshot's tree
   of the directory (:data:`ScanGroup`). The worker answers ``scanned`` with each file's
   outcome, or with one number for a group whose files are all identical to the parent's
   (:data:`GroupResult`), and the ids (and sizes) of the blobs found; it keeps the blobs
   (compressed as found, in a backup of new data: see :meth:`BatchScanner.scan`).
2. The main process claims the ids (the one dedup decision, shared by all workers) and sends
   ``seal`` with the ids to store.
3. The worker compresses those (unless done) into contiguous *segments* and answers
   ``sealed``; the main process encrypts each blob of a segment into a buffer that it
   appends to its open pack in one piece. Encrypting there (AES-GCM runs at ~7 GB/s,
   ~1.5 us a call) keeps ``cryptography`` and the encryption key out of the workers: ~9 MiB
   less in each.

A worker hands a file back to the main process (:data:`MAIN`) when the main process must
decide: hardlinked files (read once per inode), files above ``MAX_FILE_SIZE`` (read by
threads that compress one file's chunks in parallel), and entries that are no longer regular
files. A scan stops reading after ``BATCH_BYTES``; the main process queues the rest again, so
a worker holds at most about ``BATCH_BYTES + MAX_FILE_SIZE`` of plaintext, of one batch: a
``scan`` that arrives before the ``seal`` of the batch it holds waits for it.

Workers start with ``spawn`` (never ``fork`` from a threaded process), receive the id key
and chunker seed once, in memory, over their socket, and die with their parent. The same
:class:`BatchScanner` runs in a thread when a backup is too small to be worth starting
processes.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from roost import memory
from roost.engine import compress, fsmeta
from roost.engine.chunker import Chunker
from roost.engine.crypto import ChunkIds
from roost.engine.filereader import FileReader, describe_os_error, open_for_reading
from roost.engine.heldblobs import HeldBlob, HeldBlobs
from roost.engine.parenttree import ParentDir
from roost.engine.scankeys import ParentKey, file_node, lstat_key
from roost.engine.tree import Node, encode_entry
from roost.errors import RoostError

MAX_FILE_SIZE = 8 * 1024 * 1024  # larger files: threads (parallel chunks within the file)
BATCH_BYTES = 4 * 1024 * 1024
BATCH_FILES = 256
SEGMENT_BUFFER = 16 * 1024 * 1024  # a segment buffer's address space, at least (untouched: free)
# A sealed answer's compressed bytes, at most (unless one blob is bigger): what a batch's
# segment costs the worker, the receiving buffer and the encrypting buffer in the main
# process, each keeping about as much touched between parts. Whole segments (up to
# BATCH_BYTES + MAX_FILE_SIZE of poorly compressible data) were seen to hold 12 MiB in each
# of the three at once; parts of 1 MiB kept ~7.5 MiB touched in the three processes, and
# 512 KiB parts half that, for ~250 more messages (~10 ms) per kernel-tree backup.
SEGMENT_PART = 512 * 1024
# of a segment buffer, kept touched between batches: a part and some
KEEP_SEGMENT = SEGMENT_PART * 5 // 4
SEAL_FIRST = 1024 * 1024  # held bytes above which a worker seals before it scans on
# Compress each chunk as it is found while at least this share of the bytes found lately was
# wanted (see BatchScanner.scan); below it, hold the plaintext until the seal says what to
# compress, as a backup of data stored already (another server's copy of it) wants little.
EAGER_SHARE = 0.75

# open() failures of a path listed as a regular file meaning it no longer is one: a symlink
# (O_NOFOLLOW), a socket, a device without a driver. The main process looks at it again.
_NOT_A_FILE_NOW = frozenset({errno.ELOOP, errno.ENXIO, errno.ENODEV})

# what became of one file of a batch
EXCLUDED = 0  # larger than the exclude size limit
MAIN = 1  # the main process must handle it (hardlink, big file, no longer a regular file)
MISSED = 2  # could not be read at all: ``problem`` says why
UNCHANGED = 3  # same size, mtime, ctime and inode as the parent's entry: not read
STORED = 4  # read; ``problem`` set when it changed while being read
IDENTICAL = 5  # unchanged, and every other field equal too: the parent's node is reused

# The parent snapshot's entries of a group's files: None when the directory has none. For a
# directory of up to WHOLE_GROUP_FILES files, the parent's tree blob itself, in which the
# worker looks each file up: building the comparison keys, and decoding the tree for them,
# was a third of the main process's time in a no-change backup. Such a directory's files go
# in one group, in one batch (alone if they are more than BATCH_FILES). A bigger directory's
# files come in several groups; sending its tree with each would cost time and memory
# quadratic in its size, so the main process decodes it once and sends each file's key
# (None: read it).
ParentEntries = bytes | list[ParentKey | None] | None
WHOLE_GROUP_FILES = 1024
# One directory's regular files to scan: the directory's path ending in "/", what to compare
# them with (see ParentEntries), the files' names, and the names to read whatever their
# lstat says (missed by the last backup).
ScanGroup = tuple[bytes, ParentEntries, list[bytes], frozenset[bytes]]


class FileResult(NamedTuple):
    outcome: int
    node: Node | None = None  # UNCHANGED: the caller fills in content and xattrs
    problem: str | None = None
    bytes_read: int = 0
    entry: bytes | None = None  # STORED: the file's tree entry, encoded (tree.encode_entry)
    size: int = 0  # STORED: the file's size

    def __reduce__(self) -> tuple[Callable[..., FileResult], tuple[object, ...]]:
        # pickled as tuple.__new__(FileResult, fields): a NamedTuple's own way calls Python
        # code per result on both ends (__getnewargs__, then __new__), which made a batch's
        # results twice as slow to pickle; a batch holds 256 of them
        return tuple.__new__, (FileResult, tuple(self))


# One object each for the results without details: pickle writes an object it has seen in
# the same message as a reference, so a batch of unchanged files crosses the pipe (and is
# unpickled by the main process, the bottleneck of a no-change backup) as one result.
_IDENTICAL = FileResult(IDENTICAL)
_HANDED_BACK = FileResult(MAIN)
_EXCLUDED = FileResult(EXCLUDED)

# a blob a scan found: (type, id, plaintext length); the scanner keeps the plaintext
Candidate = tuple[int, bytes, int]
# A group's answer: the results of a prefix of its names (reading stops after BATCH_BYTES),
# or, when every one of its files is identical to the parent's entry, the number of entries
# of the parent tree: then the main process handles the group at once, not file by file, and
# knows without decoding the tree whether the directory is unchanged.
GroupResult = list[FileResult] | int
# a scan's answer: a prefix of the groups' results, blobs found, bytes of identical files
Scanned = tuple[list[GroupResult], list[Candidate], int]
# where a compressed blob sits in a segment: (type, id, length, plaintext length, method)
SegmentEntry = tuple[int, bytes, int, int, int]
# one part of a sealed batch: its segment, the blobs in it, whether it is the last part
SealedPart = tuple[memoryview, list[SegmentEntry], bool]


@dataclass(frozen=True)
class WorkerSetup:
    """What a scanner needs: of the key, only what names and cuts chunks (see ChunkIds)."""

    id_key: bytes
    chunker_seed: int
    chunk_min: int
    chunk_avg: int
    chunk_max: int
    read_xattrs: bool = True
    larger_than: int | None = None  # exclude files larger than this
    max_file_size: int = MAX_FILE_SIZE
    batch_bytes: int = BATCH_BYTES


class BatchScanner:
    """Does the per-file job for a batch of regular files (see the module docstring).

    Two steps per batch, so that the main process decides deduplication before anything is
    compressed: :meth:`scan` returns the files' nodes and the blobs found (ids only), then
    :meth:`seal` compresses and encrypts the blobs the main process wants stored, into one
    contiguous segment of a pack.
    """

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.ids = ChunkIds(setup.id_key)
        self.chunker = Chunker(
            setup.chunk_min, setup.chunk_avg, setup.chunk_max, setup.chunker_seed
        )
        self._held: dict[int, dict[bytes, HeldBlob]] = {}
        self._uncompressed: deque[HeldBlob] = deque()  # held blobs, for compress_ahead
        self._held_bytes = 0  # what the held blobs take now (plaintext or compressed)
        self._file_bytes = 0  # read so far from the file being scanned
        self._segments = memory.ReusedBuffers(SEGMENT_BUFFER, KEEP_SEGMENT)
        self._wanted_share = 1.0  # of the bytes found lately, the share the seals wanted

    def scan(self, batch: int, groups: list[ScanGroup]) -> Scanned:
        """Results for a prefix of ``groups`` (reading stops after ``BATCH_BYTES``).

        The blobs found are compressed as they are found while the seals want most of what
        is found (:data:`EAGER_SHARE`): nearly always, in a backup of new data, and then a
        batch is held at its compressed size.
        """
        answers: list[GroupResult] = []
        collector = HeldBlobs(self.ids, self._wanted_share >= EAGER_SHARE)
        reader = FileReader(collector, self.chunker, self._count_read)
        tally = _Tally()  # a local: threads standing in for workers share one scanner
        for group in groups:
            answers.append(self._scan_group(reader, tally, *group))
            if tally.read >= self.setup.batch_bytes:
                break
        if collector.found:  # else there is nothing to seal: no "seal" comes
            self._held[batch] = collector.found
            if not collector.eager:
                self._uncompressed.extend(collector.found.values())
            self._held_bytes += sum(len(held.data) for held in collector.found.values())
        found = collector.found.items()
        candidates = [(held.kind, blob_id, held.raw_length) for blob_id, held in found]
        return answers, candidates, tally.identical_bytes

    def _scan_group(
        self,
        reader: FileReader,
        tally: _Tally,
        directory: bytes,
        parent: ParentEntries,
        names: list[bytes],
        read_anyway: frozenset[bytes],
    ) -> GroupResult:
        tree = ParentDir.decode_or_none(b"", parent) if isinstance(parent, bytes) else None
        if tree is not None:
            keys = [None if name in read_anyway else tree.key(name) for name in names]
        else:
            keys = parent if isinstance(parent, list) else [None] * len(names)
        results: list[FileResult] = []
        for name, key in zip(names, keys, strict=True):
            result = self.scan_one(reader, directory + name, name, key)
            results.append(result)
            if result is _IDENTICAL:
                tally.identical_bytes += key[0] or 0  # type: ignore[index]
            tally.read += result.bytes_read
            if tally.read >= self.setup.batch_bytes:
                break
        every_file_identical = len(results) == len(names) and all(
            result is _IDENTICAL for result in results
        )
        return len(tree) if tree is not None and every_file_identical else results

    def seal(self, batch: int, wanted: list[bytes]) -> Iterator[SealedPart]:
        """Compress the wanted blobs of a scanned batch into segments of ~SEGMENT_PART bytes.

        Each blob is compressed, copied into its place and dropped in turn, so a batch's
        plaintext shrinks as its segments are made; the last part says so (it may be empty).
        The main process encrypts the blobs on their way into a pack
        (BlobSaver.add_compressed), so a worker never holds the encryption key. A part is a
        view of this thread's segment buffer, which the next part overwrites: send or copy
        it before taking the next one, and call :meth:`release_segment` after the last.
        """
        found = self._held.pop(batch)
        self._held_bytes -= sum(len(held.data) for held in found.values())
        self._learn_wanted(found, wanted)
        chosen = [(blob_id, found.pop(blob_id)) for blob_id in wanted]
        for unwanted in found.values():  # stored already: dropped, and not compressed ahead
            unwanted.method, unwanted.data = compress.RAW, b""
        if not self._held:
            self._uncompressed.clear()
        entries: list[SegmentEntry] = []
        offset = 0
        for blob_id, held in chosen:
            method, payload = held.compressed()
            held.data = b""  # dropped once in the segment
            length = len(payload)
            if entries and offset + length > SEGMENT_PART:
                yield memoryview(self._segments.get(offset))[:offset], entries, False
                entries, offset = [], 0
            buffer = self._segments.get(offset + length)
            buffer[offset : offset + length] = payload
            entries.append((held.kind, blob_id, length, held.raw_length, method))
            offset += length
            self._segments.reach(offset)
            del payload
        yield memoryview(self._segments.get(offset))[:offset], entries, True

    def _learn_wanted(self, found: dict[bytes, HeldBlob], wanted: list[bytes]) -> None:
        """Weigh the share of a batch's found bytes that its seal wants into the recent one."""
        total = sum(held.raw_length for held in found.values())
        if total:
            share = sum(found[blob_id].raw_length for blob_id in wanted) / total
            self._wanted_share = (self._wanted_share + share) / 2

    def compress_ahead(self) -> bool:
        """Compress one held blob, as its seal will; False when none is left.

        For a worker waiting for a ``seal``: the main process's answer takes a moment, and
        the blobs of a full backup are nearly all wanted. The held batch shrinks to its
        compressed size meanwhile, and the seal only copies the blobs into the segment.
        """
        while self._uncompressed:
            held = self._uncompressed.popleft()
            if held.method is None:
                before = len(held.data)
                _, payload = held.compressed()
                self._held_bytes -= before - len(payload)
                return True
        return False

    def holds_batch(self) -> bool:
        """Whether a scanned batch waits for its ``seal``."""
        return bool(self._held)

    def seals_first(self) -> bool:
        """Whether the next ``scan`` should wait for a seal: the held blobs take SEAL_FIRST.

        Scanning while holding a batch of several megabytes held two batches' plaintext at
        once; holding a small one (a batch of small files, or one compressed meanwhile) costs
        little, and waiting for every seal cost a round trip per batch (+36 % on a million
        ~1 KiB files).
        """
        return self._held_bytes >= SEAL_FIRST

    def release_segment(self) -> None:
        """Give back what the last segments touched beyond KEEP_SEGMENT; call once sent.

        Segments are written into this thread's anonymous mapping (a ``bytearray`` would
        zero-fill all of itself), touched only as far as they reach.
        """
        self._segments.give_back()

    def scan_one(
        self, reader: FileReader, path: bytes, name: bytes, parent: ParentKey | None
    ) -> FileResult:
        if parent is None:
            return self._scan_new(reader, path, name)
        try:
            st = os.lstat(path)
        except OSError as exc:
            return FileResult(MISSED, problem=describe_os_error(exc))
        if (not_read := self._not_read_here(st)) is not None:
            return not_read
        key = lstat_key(st)
        if key == parent:
            return _IDENTICAL  # no node: the parent's entry is reused
        if key[:4] == parent[:4]:  # the caller takes content and xattrs
            return FileResult(UNCHANGED, file_node(name, st))
        return self._read(reader, path, file_node(name, st), st)

    def _scan_new(self, reader: FileReader, path: bytes, name: bytes) -> FileResult:
        """scan_one of a file without a parent entry: it is read whatever its ``lstat`` says.

        So it is opened first, and its ``fstat`` and xattrs come through the descriptor: one
        path lookup instead of three (``lstat``, ``llistxattr``, ``open``), ~2 us a file.
        Only a file the walk listed as regular gets here; whatever took its place since is
        opened without blocking or following a symlink, and handed back when not regular.
        """
        try:
            fd = open_for_reading(path)
        except OSError as exc:
            if exc.errno in _NOT_A_FILE_NOW:
                return _HANDED_BACK
            return FileResult(MISSED, problem=describe_os_error(exc))
        try:
            st = os.fstat(fd)
            if (handed_back := self._not_read_here(st)) is not None:
                return handed_back
            return self._read(reader, path, file_node(name, st), st, fd)
        finally:
            os.close(fd)

    def _not_read_here(self, st: os.stat_result) -> FileResult | None:
        """What becomes of a file this scanner does not read (None: it reads it)."""
        if not stat.S_ISREG(st.st_mode):
            return _HANDED_BACK
        limit = self.setup.larger_than
        if limit is not None and st.st_size > limit:
            return _EXCLUDED
        if st.st_size > self.setup.max_file_size or st.st_nlink > 1:
            return _HANDED_BACK
        return None

    def _read(
        self,
        reader: FileReader,
        path: bytes,
        node: Node,
        st: os.stat_result,
        fd: int | None = None,
    ) -> FileResult:
        try:
            if self.setup.read_xattrs:
                node.xattrs = fsmeta.xattrs_of(path, fd)
        except RoostError as exc:
            return FileResult(MISSED, problem=str(exc))
        self._file_bytes = 0
        if fd is None:
            stored, problem = reader.read(path, node, known=st)
        else:
            stored, problem = reader.read_open(fd, node, known=st)
        if not stored:
            return FileResult(MISSED, None, problem, self._file_bytes)
        # encoded here rather than in the main process, whose one interpreter serves the
        # answers of every worker
        return FileResult(STORED, None, problem, self._file_bytes, encode_entry(node), node.size)

    def _count_read(self, count: int) -> None:
        self._file_bytes += count


@dataclass(slots=True)
class _Tally:
    """What one scan has read so far, and the size of the identical files it found."""

    read: int = 0
    identical_bytes: int = 0


__all__ = [
    "BATCH_BYTES",
    "BATCH_FILES",
    "EXCLUDED",
    "IDENTICAL",
    "MAIN",
    "MAX_FILE_SIZE",
    "MISSED",
    "STORED",
    "UNCHANGED",
    "BatchScanner",
    "Candidate",
    "FileResult",
    "GroupResult",
    "ParentEntries",
    "ScanGroup",
    "SegmentEntry",
    "WorkerSetup",
]
