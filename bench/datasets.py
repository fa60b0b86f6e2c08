"""Benchmark datasets: prepared once into the cache directory, reused across runs.

Layout of the cache directory (default ``/var/tmp/roost-bench``)::

    datasets/<name>/         the tree every tool backs up (never changed, see below)
    datasets/<name>.json     its manifest, written last: a dataset without one is rebuilt
    datasets/<name>.partial  a build in progress (deleted and redone if a build was cut off)
    pending/<name>/          originals set aside while the 1 % change is applied
    work/                    repositories, restore targets, tool homes (deleted between runs)

The 1 % change is applied in place and undone afterwards, crash-safely: the journal of the files
to change is written first, then each original is *renamed* into ``pending/<name>/`` (same file
system, so the original inode, content and timestamps are kept untouched) and a modified copy is
written in its place. Undoing renames the originals back over the copies. A run that dies in
between leaves the journal behind, and the next run puts the originals back before it does
anything else (``recover_pending``), so the cached dataset stays pristine.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

GENERATOR_VERSION = 1  # bump when a generator changes: cached datasets are rebuilt
KERNEL_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
KERNEL_PACKAGE = "linux-source-6.1"
CHANGE_FRACTION = 0.01
CHANGE_BYTES = 64  # bytes flipped in the middle of each changed file
NAMES = ("source", "large", "small", "quick")


@dataclass(frozen=True)
class FileEntry:
    rel: str  # path relative to the dataset root
    size: int


@dataclass(frozen=True)
class Dataset:
    name: str
    root: Path  # the directory every tool backs up
    description: str
    files: int
    bytes: int

    def list_files(self) -> list[FileEntry]:
        """All regular files (no symlinks), sorted by relative path."""
        found: list[FileEntry] = []
        stack = [self.root]
        while stack:
            folder = stack.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        rel = os.path.relpath(entry.path, self.root)
                        found.append(FileEntry(rel, entry.stat(follow_symlinks=False).st_size))
        found.sort(key=lambda item: item.rel)
        return found


# --- text and random data ---------------------------------------------------------------------


class TextGenerator:
    """Deterministic text-like bytes: random phrases of Zipf-distributed made-up words.

    65,536 phrases (1-4 words, some ending a sentence or a line) are drawn once; a block is a
    random sequence of phrases picked with 16-bit indices from ``randbytes``, so the joining
    runs in C (~150 MB/s). zstd level 3 compresses it to about 30 %, and it does not dedup.
    """

    def __init__(self, seed: str) -> None:
        self._rng = random.Random(seed)
        rng = random.Random("roost-bench-vocabulary")  # one vocabulary for every generator
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        weights = list(range(len(letters), 0, -1))
        words = [
            "".join(rng.choices(letters, weights=weights, k=min(12, int(rng.expovariate(0.2)) + 1)))
            for _ in range(8000)
        ]
        zipf = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))
        self._phrases: list[bytes] = []
        for _ in range(65536):
            phrase = " ".join(rng.choices(words, cum_weights=zipf, k=rng.randint(1, 4)))
            end = rng.random()
            tail = ".\n" if end < 0.08 else ", " if end < 0.15 else " "
            self._phrases.append((phrase + tail).encode())

    def block(self, approx_size: int) -> bytes:
        """About ``approx_size`` bytes (phrases average ~14.5 bytes)."""
        count = max(1, approx_size // 14)
        indices = memoryview(self._rng.randbytes(2 * count)).cast("H")
        return b"".join(map(self._phrases.__getitem__, indices))

    def exactly(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            out += self.block(size - len(out) + 64)
        return bytes(out[:size])


def random_block(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


# --- builders -----------------------------------------------------------------------------------


def _write_large_file(path: str, kind: str, seed: str, size: int) -> None:
    """One file of the ``large`` dataset, written in 16 MiB blocks (runs in a worker process)."""
    text = TextGenerator(seed) if kind == "text" else None
    rng = random.Random(seed)
    written = 0
    with open(path, "wb") as out:
        while written < size:
            want = min(16 * MiB, size - written)
            data = text.exactly(want) if text else random_block(rng, want)
            out.write(data)
            written += want


def _build_large(root: Path, log: Callable[[str], None]) -> None:
    specs = [
        ("compressible-1.txt", "text"),
        ("compressible-2.txt", "text"),
        ("random-1.bin", "random"),
        ("random-2.bin", "random"),
    ]
    log("generating 4 x 1 GiB (2 text-like, 2 random)")
    with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        jobs = [
            pool.submit(_write_large_file, str(root / name), kind, f"large-{name}", GiB)
            for name, kind in specs
        ]
        for job in jobs:
            job.result()


def _small_file_size(index: int) -> int:
    return 1024 + (index * 2654435761) % 257 - 128  # 896..1152 bytes, about 1 KiB


def _build_small_dir(root: Path, folder: int, files: int, corpus: bytes) -> None:
    sub = root / f"d{folder // 100:02d}" / f"d{folder:04d}"  # 10 x 100 dirs of 1000 files
    sub.mkdir(parents=True)
    prefix = f"{sub}/f"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for number in range(files):
        index = folder * files + number
        header = f"small file {folder:04d}/{number:04d} #{index}\n".encode()
        size = _small_file_size(index)
        offset = (index * 7919) % (len(corpus) - 2 * KiB)
        handle = os.open(f"{prefix}{number:04d}.txt", flags, 0o644)
        try:
            os.write(handle, header + corpus[offset : offset + size - len(header)])
        finally:
            os.close(handle)


def _build_small(
    root: Path, log: Callable[[str], None], folders: int = 1000, files: int = 1000
) -> None:
    log(f"generating {folders * files:,} files of ~1 KiB in {folders} directories")
    corpus = TextGenerator("small-corpus").exactly(4 * MiB)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [pool.submit(_build_small_dir, root, n, files, corpus) for n in range(folders)]
        for done, job in enumerate(jobs, 1):
            job.result()
            if done % 100 == 0:
                log(f"  {done * files:,} files ({time.monotonic() - started:.0f} s)")


def _build_quick(root: Path, log: Callable[[str], None]) -> None:
    """2,000 files, ~50 MB: 20 files of 2 MiB (half text, half random), the rest 2-8 KiB text."""
    log("generating the quick dataset (2,000 files, ~50 MB)")
    text = TextGenerator("quick")
    rng = random.Random("quick")
    corpus = text.exactly(1 * MiB)
    for index in range(2000):
        folder = root / f"dir{index // 50:02d}"
        folder.mkdir(exist_ok=True)
        if index % 100 == 0:
            data = text.exactly(2 * MiB) if index % 200 == 0 else rng.randbytes(2 * MiB)
        else:
            size = 2 * KiB + (index * 7919) % (6 * KiB)
            offset = (index * 104729) % (len(corpus) - size)
            data = f"quick file {index}\n".encode() + corpus[offset : offset + size]
        (folder / f"file{index:04d}.dat").write_bytes(data)


def _build_source(root: Path, log: Callable[[str], None]) -> None:
    if not KERNEL_TARBALL.exists():
        raise SystemExit(f"{KERNEL_TARBALL} is missing (apt-get install {KERNEL_PACKAGE})")
    log(f"extracting {KERNEL_TARBALL} (once)")
    subprocess.run(["tar", "-xf", str(KERNEL_TARBALL), "-C", str(root)], check=True)


BUILDERS: dict[str, tuple[str, Callable[[Path, Callable[[str], None]], None]]] = {
    "source": ("Linux 6.1 source tree (Debian linux-source-6.1)", _build_source),
    "large": ("4 x 1 GiB: 2 text-like (compressible), 2 random", _build_large),
    "small": ("1,000,000 files of ~1 KiB in 1000 directories", _build_small),
    "quick": ("smoke test: 2,000 files, ~50 MB", _build_quick),
}


def describe(name: str) -> str:
    return BUILDERS[name][0]


def prepare(name: str, cache: Path, log: Callable[[str], None]) -> Dataset:
    """The dataset ``name``, built into the cache first if it is not there (or is outdated)."""
    description, build = BUILDERS[name]
    base = cache / "datasets"
    root, manifest, partial = base / name, base / f"{name}.json", base / f"{name}.partial"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        if meta.get("generator_version") == GENERATOR_VERSION and root.is_dir():
            return Dataset(name, root, description, meta["files"], meta["bytes"])
        log(f"dataset {name}: cached copy is outdated, rebuilding")
        manifest.unlink()
    for stale in (partial, root):
        if stale.exists():
            shutil.rmtree(stale)
    partial.mkdir(parents=True)
    started = time.monotonic()
    build(partial, lambda message: log(f"dataset {name}: {message}"))
    partial.rename(root)
    dataset = Dataset(name, root, description, 0, 0)
    entries = dataset.list_files()
    total = sum(entry.size for entry in entries)
    meta = {
        "name": name,
        "generator_version": GENERATOR_VERSION,
        "files": len(entries),
        "bytes": total,
        "built_seconds": round(time.monotonic() - started, 1),
    }
    manifest.write_text(json.dumps(meta, indent=2) + "\n")
    log(
        f"dataset {name}: {len(entries):,} files, {total / 1e9:.2f} GB, built in "
        f"{meta['built_seconds']} s"
    )
    return Dataset(name, root, description, len(entries), total)


# --- the 1 % change -----------------------------------------------------------------------------


def choose_changed(entries: list[FileEntry], dataset: str) -> list[FileEntry]:
    """1 % of the files (at least one), the same ones in every run and for every tool.

    Drawn among non-empty files, so a change never alters a file's size.
    """
    count = max(1, round(len(entries) * CHANGE_FRACTION))
    candidates = [entry for entry in entries if entry.size > 0]
    chosen = random.Random(f"change-{dataset}").sample(candidates, count)
    return sorted(chosen, key=lambda item: item.rel)


def _journal(cache: Path, name: str) -> Path:
    return cache / "pending" / name / "journal.json"


def _write_modified(original: Path, target: Path) -> None:
    """A copy of ``original`` at ``target`` with ``CHANGE_BYTES`` inverted in the middle."""
    shutil.copyfile(original, target)
    shutil.copymode(original, target)
    size = target.stat().st_size
    with open(target, "r+b") as out:
        offset = max(0, size // 2 - CHANGE_BYTES // 2)
        out.seek(offset)
        piece = out.read(CHANGE_BYTES)
        out.seek(offset)
        out.write(bytes(byte ^ 0xFF for byte in piece))


@contextmanager
def changed(dataset: Dataset, files: list[FileEntry], cache: Path) -> Iterator[None]:
    """Apply the change to ``files`` in place for the duration of the block, then undo it."""
    journal = _journal(cache, dataset.name)
    store = journal.parent / "files"
    store.mkdir(parents=True, exist_ok=True)
    record = {"root": str(dataset.root), "files": [entry.rel for entry in files]}
    temp = journal.with_suffix(".tmp")
    temp.write_text(json.dumps(record))
    temp.replace(journal)  # the journal exists before any original moves
    try:
        for number, entry in enumerate(files):
            original = dataset.root / entry.rel
            kept = store / str(number)
            original.rename(kept)
            _write_modified(kept, original)
        yield
    finally:
        _undo(journal)


def _undo(journal: Path) -> None:
    if not journal.exists():
        return
    record = json.loads(journal.read_text())
    root = Path(record["root"])
    store = journal.parent / "files"
    for number, rel in enumerate(record["files"]):
        kept = store / str(number)
        if kept.exists():
            kept.replace(root / rel)
    shutil.rmtree(journal.parent)


def recover_pending(cache: Path, log: Callable[[str], None]) -> None:
    """Put back originals left aside by a run that was cut off during a change."""
    pending = cache / "pending"
    if not pending.is_dir():
        return
    for folder in sorted(pending.iterdir()):
        journal = folder / "journal.json"
        if journal.exists():
            log(f"restoring the originals of dataset {folder.name} left by an interrupted run")
            _undo(journal)
        else:
            shutil.rmtree(folder)
