"""``roost benchmark``: how fast this machine runs each stage of the backup pipeline.

Each stage runs for about ``--seconds`` over generated data (half random bytes, half
text-like words) in the sizes the engine uses, single-threaded: FastCDC chunking with the
repository's default chunk sizes, keyed BLAKE3 (chunk ids), zstd at the engine's level on the
compressible half, and AES-256-GCM encryption. The slowest stage bounds one core's backup speed.
"""

from __future__ import annotations

import bisect
import itertools
import os
import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import typer
import zstandard
from pyfastcdc import FastCDC

from roost.cli import output
from roost.cli.context import JsonOption, session
from roost.engine import compress
from roost.engine.crypto import Key, MasterKey
from roost.engine.repository import RepoConfig

MiB = 1024 * 1024
SLICE = 1 * MiB  # hashing, compression and encryption work on chunk-sized pieces
CHUNKER_SLICE = 16 * MiB  # the chunker needs room for several chunks per call


@dataclass(frozen=True)
class Stage:
    key: str
    name: str
    data: str  # which half of the test data: "mixed" or "text"
    run: Callable[[memoryview], object]
    slice_size: int = SLICE


def register(app: typer.Typer) -> None:
    app.command(name="benchmark")(benchmark)


def benchmark(
    ctx: typer.Context,
    seconds: Annotated[
        float, typer.Option(min=0.01, metavar="SECONDS", help="How long to run each stage.")
    ] = 1.5,
    size_mib: Annotated[int, typer.Option(min=2, hidden=True)] = 64,
    json_output: JsonOption = False,
) -> None:
    """Measure chunking, hashing, compression and encryption speed on this machine."""
    cli = session(ctx, json_output)
    mixed, text = make_data(size_mib * MiB)
    results = {stage.key: measure(stage, mixed, text, seconds) for stage in stages()}
    if cli.json:
        output.print_json({**results, "data_bytes": len(mixed), "seconds_per_stage": seconds})
        return
    grid = output.table("Stage", "Data", "GB/s", numeric=("GB/s",))
    for stage in stages():
        output.add_row(grid, stage.name, stage.data, f"{results[stage.key]:.2f}")
    output.print_table(grid)


def stages() -> list[Stage]:
    key = Key(MasterKey.generate())
    cdc = FastCDC(
        RepoConfig.chunk_avg,
        min_size=RepoConfig.chunk_min,
        max_size=RepoConfig.chunk_max,
        seed=key.master.chunker_seed,
    )
    zstd = zstandard.ZstdCompressor(level=compress.LEVEL)
    return [
        Stage(
            "fastcdc_gbps",
            "FastCDC chunking",
            "mixed",
            lambda data: sum(1 for _ in cdc.cut_buf(data)),
            CHUNKER_SLICE,
        ),
        Stage("blake3_keyed_gbps", "keyed BLAKE3", "mixed", key.chunk_id),
        Stage(
            f"zstd{compress.LEVEL}_gbps",
            f"zstd level {compress.LEVEL} compress",
            "text",
            zstd.compress,
        ),
        Stage(
            "aes256gcm_gbps",
            "AES-256-GCM encrypt",
            "mixed",
            lambda data: key.encrypt(data, b"benchmark"),
        ),
    ]


def measure(stage: Stage, mixed: bytes, text: bytes, seconds: float) -> float:
    """GB/s of ``stage`` over its data, repeated until ``seconds`` have passed."""
    view = memoryview(text if stage.data == "text" else mixed)
    done = 0
    start = time.perf_counter()
    while True:
        for offset in range(0, len(view), stage.slice_size):
            piece = view[offset : offset + stage.slice_size]
            stage.run(piece)
            done += len(piece)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return done / elapsed / 1e9


def make_data(size: int) -> tuple[bytes, bytes]:
    """(all data, its text half): random bytes followed by seeded text-like words."""
    text = text_like(size - size // 2)
    return os.urandom(size // 2) + text, text


def text_like(size: int) -> bytes:
    """Seeded words with a Zipf frequency distribution, like natural-language text."""
    rng = random.Random(1)
    words = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10))) for _ in range(4096)
    ]
    cumulative = list(itertools.accumulate(1 / rank for rank in range(1, len(words) + 1)))
    # 65536 slots filled in proportion to each word's frequency, indexed by random u16s
    slots = [
        words[bisect.bisect_left(cumulative, cumulative[-1] * (i + 0.5) / 65536)]
        for i in range(65536)
    ]
    picks = memoryview(rng.randbytes(2 * (size // 5 + 1))).cast("H")
    return " ".join([slots[i] for i in picks]).encode()[:size]
