"""Rebuilding index entries from the packs themselves (packs describe themselves).

``adopt_orphan_packs`` runs at the start of every backup: packs uploaded by a backup that
crashed before its next index checkpoint are read (header only) and indexed, so their blobs
are reused instead of uploaded again. ``rebuild_index`` is ``roost repair index``: it reads
every pack header and replaces all index files with one consolidated set.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from roost.engine.index import IndexFile, MasterIndex
from roost.engine.pack import (
    TRAILER,
    BlobEntry,
    check_bounds,
    header_span,
    pack_id_from_key,
    parse_header,
)
from roost.engine.repository import Repository
from roost.errors import CorruptObject, ObjectNotFound, StorageError


def read_pack_header(repo: Repository, key: str, size: int) -> list[BlobEntry]:
    trailer = repo.backend.get_range(key, max(0, size - TRAILER.size), TRAILER.size)
    offset, length = header_span(size, trailer)
    sealed = repo.backend.get_range(key, offset, length)
    entries = parse_header(repo.key, sealed, f"header of pack {key}")
    check_bounds(entries, offset, f"pack {key}")
    return entries


def list_packs(repo: Repository) -> dict[bytes, tuple[str, int]]:
    """pack id -> (storage key, size) for every pack in storage."""
    found = {}
    for info in repo.backend.list("data/"):
        pack_id = pack_id_from_key(info.key)
        if pack_id is not None:
            found[pack_id] = (info.key, info.size)
    return found


def _headers(
    repo: Repository,
    packs: dict[bytes, tuple[str, int]],
    on_error: Callable[[str, Exception], None],
) -> dict[bytes, list[BlobEntry]]:
    def load(item: tuple[bytes, tuple[str, int]]) -> tuple[bytes, list[BlobEntry] | None]:
        pack_id, (key, size) = item
        try:
            return pack_id, read_pack_header(repo, key, size)
        except (CorruptObject, ObjectNotFound, StorageError) as exc:
            on_error(key, exc)
            return pack_id, None

    with ThreadPoolExecutor(max_workers=8) as pool:
        loaded = list(pool.map(load, packs.items()))
    return {pack_id: entries for pack_id, entries in loaded if entries is not None}


def adopt_orphan_packs(repo: Repository, index: MasterIndex) -> int:
    """Index packs that no index file lists; return how many were adopted."""
    known = index.packs()
    orphans = {pid: v for pid, v in list_packs(repo).items() if pid not in known}
    if not orphans:
        return 0
    headers = _headers(repo, orphans, lambda key, exc: None)  # damaged ones: `check` reports
    if not headers:
        return 0
    adopted = IndexFile(created_ns=time.time_ns(), packs=headers)
    repo.write_index_file(adopted)
    for pack_id, entries in headers.items():
        index.add_pack(pack_id, entries)
    return len(headers)


def rebuild_index(repo: Repository, on_error: Callable[[str, Exception], None]) -> tuple[int, int]:
    """Replace every index file by one built from the pack headers; return (packs, blobs)."""
    old_ids = [bytes.fromhex(info.key.split("/", 1)[1]) for info in repo.backend.list("index/")]
    headers = _headers(repo, list_packs(repo), on_error)
    fresh = IndexFile(created_ns=time.time_ns(), packs=headers, supersedes=old_ids)
    repo.write_index_file(fresh)
    for old in old_ids:
        with contextlib.suppress(ObjectNotFound):
            repo.backend.delete(f"index/{old.hex()}")
    repo.load_index()
    return len(headers), sum(len(e) for e in headers.values())
