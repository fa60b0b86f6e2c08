"""Prune: remove data no snapshot references, without stopping running backups.

Two phases, separated by leases (see lease.py and docs/design.md, "Prune"):

1. Tombstone. Every blob location whose blob no snapshot references (and every duplicate
   copy of a referenced blob) is tombstoned in a new index file. From then on backups treat
   those blobs as absent and upload them again if they need them. A referenced blob whose
   only copies are tombstoned (a backup re-used it while an earlier prune ran) is revived.
2. Delete. A tombstoned location may go once its tombstone is older than the grace period
   and no backup lease that started before the tombstone (plus a clock-skew margin) is alive:
   such a backup may have loaded the index before the tombstone and still reference the blob.
   Packs whose locations are all deletable are deleted; packs that are mostly deletable are
   repacked (live blobs copied, still encrypted, into new packs) and then deleted.

The index is then consolidated into one file that supersedes every file prune read, old
index files are deleted, and only then the packs. A crash at any point leaves a repository
that `check` passes: at worst some unindexed packs, which the next prune removes.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from roost.engine.index import IndexFile, Location, MasterIndex
from roost.engine.lease import DEFAULT_TTL, Lease, LeaseInfo, list_leases
from roost.engine.pack import BlobEntry, PackBuilder, pack_key
from roost.engine.recovery import list_packs
from roost.engine.repository import Repository
from roost.errors import ObjectNotFound, RepositoryError, RoostError
from roost.storage.spool import open_spool

SKEW_MARGIN_NS = 5 * 60 * 10**9


@dataclass
class PruneOptions:
    dry_run: bool = False
    grace_seconds: float = 0.0
    max_unused_fraction: float = 0.2
    lease_ttl_seconds: float = DEFAULT_TTL
    skew_margin_ns: int = SKEW_MARGIN_NS


@dataclass
class PruneReport:
    referenced_blobs: int = 0
    tombstoned_blobs: int = 0
    revived_blobs: int = 0
    deferred_blobs: int = 0
    deleted_packs: int = 0
    repacked_packs: int = 0
    orphan_packs_deleted: int = 0
    bytes_freed: int = 0
    messages: list[str] = field(default_factory=list)


class PruneBlocked(RepositoryError):
    """Another prune is running on this repository; try again when it has finished."""


def collect_referenced(repo: Repository) -> set[bytes]:
    """Every tree and data blob id reachable from any snapshot; abort if one is unreadable."""
    referenced: set[bytes] = set()
    for snap in repo.list_snapshots():
        stack = [snap.tree]
        while stack:
            tree_id = stack.pop()
            if tree_id in referenced:
                continue
            referenced.add(tree_id)
            try:
                nodes = repo.load_tree(tree_id)
            except RoostError as exc:
                raise RepositoryError(
                    f"snapshot {snap.short_id} cannot be read ({exc}); prune deletes nothing "
                    "until `roost check` passes"
                ) from exc
            for node in nodes:
                referenced.update(node.content)
                if node.subtree is not None:
                    stack.append(node.subtree)
    return referenced


class _Pruner:
    def __init__(
        self, repo: Repository, options: PruneOptions, log: Callable[[str], None], own_lease: str
    ) -> None:
        self.repo = repo
        self.options = options
        self.log = log
        self.own_lease = own_lease
        self.report = PruneReport()
        self.written: list[str] = []

    def run(self) -> PruneReport:
        stored_packs = list_packs(self.repo)
        files = self.repo.read_index_files()
        index = MasterIndex()
        index.merge(files)
        referenced = collect_referenced(self.repo)
        self.report.referenced_blobs = len(referenced)
        tombstoned_now, revived = self._tombstone(index, referenced, stored_packs)
        if tombstoned_now or revived:
            self._write_events(tombstoned_now, revived, index)
        leases = [x for x in list_leases(self.repo) if x.id != self.own_lease]
        contents = self._pack_contents(index)
        doomed, repack = self._plan_packs(contents, stored_packs, leases)
        orphans = self._orphans(stored_packs, index, leases)
        if self.options.dry_run:
            self._report_plan(doomed, repack, orphans, stored_packs)
            return self.report
        self._repack(index, repack, contents)
        self._consolidate(index, files, set(doomed) | set(repack))
        self._delete_packs([*doomed, *repack, *orphans], stored_packs)
        self.report.repacked_packs = len(repack)
        self.report.orphan_packs_deleted = len(orphans)
        return self.report

    # -- phase 1: tombstones ------------------------------------------------------------

    def _tombstone(
        self, index: MasterIndex, referenced: set[bytes], stored: dict[bytes, tuple[str, int]]
    ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, Location]]]:
        new_tombs: list[tuple[bytes, bytes]] = []
        revive: list[tuple[bytes, Location]] = []
        for blob_id in list(index.blob_ids()):
            locations = [loc for loc in index.locations(blob_id) if loc.pack in stored]
            keep = self._choose_copy(locations) if blob_id in referenced else None
            if blob_id in referenced and keep is None:
                self.log(f"referenced blob {blob_id.hex()[:16]} has no stored copy: run check")
                continue
            if keep is not None and keep.tombstoned_ns:
                revive.append((blob_id, keep))
            for loc in index.locations(blob_id):
                if loc is not keep and not loc.tombstoned_ns:
                    new_tombs.append((loc.pack, blob_id))
        self.report.tombstoned_blobs = len(new_tombs)
        self.report.revived_blobs = len(revive)
        return new_tombs, revive

    @staticmethod
    def _choose_copy(locations: list[Location]) -> Location | None:
        live = [loc for loc in locations if not loc.tombstoned_ns]
        candidates = live or locations
        return candidates[0] if candidates else None

    def _write_events(
        self,
        tombs: list[tuple[bytes, bytes]],
        revived: list[tuple[bytes, Location]],
        index: MasterIndex,
    ) -> None:
        events = IndexFile(created_ns=time.time_ns())
        for blob_id, loc in revived:
            entry = BlobEntry(
                loc.type, blob_id, loc.offset, loc.length, loc.raw_length, loc.compression
            )
            events.packs.setdefault(loc.pack, []).append(entry)
        stamp = time.time_ns()
        events.tombstones = [(pack, blob, stamp) for pack, blob in tombs]
        if not self.options.dry_run:
            self.written.append(self.repo.write_index_file(events))
        # the tombstone counts from when it became visible: after the write completed
        visible = time.time_ns()
        for blob_id, loc in revived:
            index.add_pack(
                loc.pack,
                [
                    BlobEntry(
                        loc.type, blob_id, loc.offset, loc.length, loc.raw_length, loc.compression
                    )
                ],
            )
        for pack, blob in tombs:
            index.tombstone(pack, blob, visible)
        self.log(f"tombstoned {len(tombs)} blob copies, revived {len(revived)}")

    # -- phase 2: what may be deleted ---------------------------------------------------

    def _deletable(self, tomb_ns: int, leases: list[LeaseInfo]) -> bool:
        if not tomb_ns:
            return False
        now = time.time_ns()
        if tomb_ns + self.options.grace_seconds * 1e9 > now:
            return False
        horizon = tomb_ns + self.options.skew_margin_ns
        return not any(
            lease.alive(now, self.options.lease_ttl_seconds) and lease.started_ns < horizon
            for lease in leases
        )

    def _pack_contents(self, index: MasterIndex) -> dict[bytes, list[tuple[bytes, Location]]]:
        packs: dict[bytes, list[tuple[bytes, Location]]] = {}
        for blob_id in index.blob_ids():
            for loc in index.locations(blob_id):
                packs.setdefault(loc.pack, []).append((blob_id, loc))
        return packs

    def _plan_packs(
        self,
        contents: dict[bytes, list[tuple[bytes, Location]]],
        stored: dict[bytes, tuple[str, int]],
        leases: list[LeaseInfo],
    ) -> tuple[list[bytes], list[bytes]]:
        doomed, repack = [], []
        for pack_id, blobs in contents.items():
            if pack_id not in stored:
                continue  # already gone; consolidation below keeps its (dead) entries listed
            dead = [loc for _, loc in blobs if loc.tombstoned_ns]
            if not dead:
                continue
            if not all(self._deletable(loc.tombstoned_ns, leases) for loc in dead):
                self.report.deferred_blobs += len(dead)
                continue
            total = sum(loc.length for _, loc in blobs)
            unused = sum(loc.length for loc in dead)
            if len(dead) == len(blobs):
                doomed.append(pack_id)
            elif unused / max(total, 1) > self.options.max_unused_fraction:
                repack.append(pack_id)
        if self.report.deferred_blobs:
            self.log(
                f"{self.report.deferred_blobs} tombstoned blob copies wait for running "
                "backups (or the grace period) before deletion"
            )
        return doomed, repack

    def _orphans(
        self, stored: dict[bytes, tuple[str, int]], index: MasterIndex, leases: list[LeaseInfo]
    ) -> list[bytes]:
        """Unindexed packs; only safe to delete while no backup could be writing them."""
        orphans = [pid for pid in stored if pid not in index.packs()]
        now = time.time_ns()
        if orphans and any(x.alive(now, self.options.lease_ttl_seconds) for x in leases):
            self.log(f"{len(orphans)} unindexed packs kept: a backup is running")
            return []
        return orphans

    # -- repack, consolidate, delete ----------------------------------------------------

    def _repack(
        self,
        index: MasterIndex,
        packs: list[bytes],
        contents: dict[bytes, list[tuple[bytes, Location]]],
    ) -> None:
        """Copy the live blobs of ``packs`` (still encrypted) into new packs."""
        spool = functools.partial(open_spool, self.repo.backend.spool_dir())
        builder = PackBuilder(spool)
        try:
            for pack_id in packs:
                live = [(blob, loc) for blob, loc in contents[pack_id] if not loc.tombstoned_ns]
                for blob_id, loc in live:
                    raw = self.repo.backend.get_range(pack_key(pack_id), loc.offset, loc.length)
                    self.repo.decode_blob(blob_id, loc, raw)  # never copy damaged data
                    builder.add(loc.type, blob_id, raw, loc.raw_length, loc.compression)
                    if builder.size >= self.repo.config.pack_size:
                        self._flush_pack(builder, index)
                        builder = PackBuilder(spool)
            if builder.entries:
                self._flush_pack(builder, index)
        finally:
            builder.close()  # after an error, the spool of the pack being filled

    def _flush_pack(self, builder: PackBuilder, index: MasterIndex) -> None:
        entries = list(builder.entries)
        with builder.finish(self.repo.key) as pack:
            self.repo.backend.put_file(pack_key(pack.id), pack.file, pack.size)
        # packs -> index: the new copies are indexed before the old pack can go
        self.written.append(
            self.repo.write_index_file(IndexFile(time.time_ns(), {pack.id: entries}))
        )
        index.add_pack(pack.id, entries)

    def _consolidate(
        self, index: MasterIndex, files: dict[bytes, IndexFile], dropped: set[bytes]
    ) -> None:
        state = IndexFile(created_ns=time.time_ns())
        for blob_id in index.blob_ids():
            for loc in index.locations(blob_id):
                if loc.pack in dropped:
                    continue
                entry = BlobEntry(
                    loc.type, blob_id, loc.offset, loc.length, loc.raw_length, loc.compression
                )
                state.packs.setdefault(loc.pack, []).append(entry)
                if loc.tombstoned_ns:
                    state.tombstones.append((loc.pack, blob_id, loc.tombstoned_ns))
        written = {bytes.fromhex(name.split("/", 1)[1]) for name in self.written}
        state.supersedes = sorted(set(files) | written)
        self.repo.write_index_file(state)
        for old in state.supersedes:
            with contextlib.suppress(ObjectNotFound):
                self.repo.backend.delete(f"index/{old.hex()}")

    def _delete_packs(self, packs: list[bytes], stored: dict[bytes, tuple[str, int]]) -> None:
        for pack_id in packs:
            if pack_id not in stored:
                continue
            key, size = stored[pack_id]
            try:
                self.repo.backend.delete(key)
            except ObjectNotFound:
                continue
            self.report.deleted_packs += 1
            self.report.bytes_freed += size
        self.log(
            f"deleted {self.report.deleted_packs} packs, freed {self.report.bytes_freed} bytes"
        )

    def _report_plan(
        self,
        doomed: list[bytes],
        repack: list[bytes],
        orphans: list[bytes],
        stored: dict[bytes, tuple[str, int]],
    ) -> None:
        size = sum(stored[p][1] for p in [*doomed, *orphans] if p in stored)
        self.report.messages.append(
            f"would delete {len(doomed)} packs and {len(orphans)} unindexed packs "
            f"({size} bytes) and repack {len(repack)}"
        )


def prune(
    repo: Repository, options: PruneOptions | None = None, log: Callable[[str], None] | None = None
) -> PruneReport:
    options = options or PruneOptions()
    sink = log or (lambda message: None)
    with Lease(repo, "prune") as lease:
        now = time.time_ns()
        others = [x for x in list_leases(repo) if x.id != lease.id and x.kind == "prune"]
        if any(x.alive(now, options.lease_ttl_seconds) for x in others):
            raise PruneBlocked()
        report = _Pruner(repo, options, sink, lease.id).run()
    repo.load_index()
    return report
