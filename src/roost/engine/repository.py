"""The repository: config, keys, snapshots, the index and blob reads over one Backend.

Storage layout::

    config                      crypto object (aad b"config"): JSON format version and parameters
    keys/<id>                   key files (plain JSON, master key wrapped; see keys.py)
    data/<xx>/<pack id>         packs (see pack.py)
    index/<id>                  index files (see index.py)
    snapshots/<id>              snapshots (see snapshot.py)
    leases/<id>                 leases held by running backups and prunes (see lease.py)

Writing a backup (see archiver.py and uploader.py) follows packs -> index -> snapshot, so a
crash leaves only unreferenced packs and index entries, which the next backup reuses.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from roost.engine import compress, keys
from roost.engine.crypto import Key, MasterKey, content_hash
from roost.engine.index import IndexEvents, IndexFile, Location, MasterIndex
from roost.engine.pack import BLOB_TYPES, TREE_BLOB, blob_aad, pack_key
from roost.engine.snapshot import SNAPSHOT_AAD, Snapshot
from roost.engine.tree import Node, decode_tree
from roost.errors import (
    BlobNotFound,
    CorruptObject,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
    RoostError,
    UnsupportedFormat,
    UsageError,
)
from roost.storage.base import Backend

FORMAT_VERSION = 1
CONFIG_AAD = b"config"
MiB = 1024 * 1024
TREE_WINDOW = 1 * MiB  # tree blobs are read in aligned windows of their pack ...
TREE_WINDOWS = 8  # ... of which this many recent ones are kept (8 MiB)
_Decoded = TypeVar("_Decoded", IndexFile, IndexEvents)


@dataclass(frozen=True)
class RepoConfig:
    """Fixed at init: changing the chunker would break deduplication against old data."""

    version: int
    id: str
    created: str
    chunk_min: int = 256 * 1024
    chunk_avg: int = 1 * MiB
    chunk_max: int = 8 * MiB
    pack_size: int = 16 * MiB

    @classmethod
    def new(cls, **overrides: int) -> RepoConfig:
        now = datetime.now(UTC).isoformat()
        return cls(FORMAT_VERSION, os.urandom(16).hex(), now, **overrides)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RepoConfig:
        try:
            doc: dict[str, Any] = json.loads(data)
            if doc.get("version") != FORMAT_VERSION:
                raise UnsupportedFormat(
                    f"repository format {doc.get('version')} is not supported by this Roost"
                )
            return cls(**doc)
        except (ValueError, TypeError) as exc:
            raise CorruptObject("the repository config is malformed") from exc


def _new_id() -> str:
    return os.urandom(32).hex()


class _WindowCache:
    """Recently read windows of tree packs, so that reading a tree costs no storage request.

    Trees are small (a kernel tree of 5,000 directories averages 1 KiB per stored tree) and
    packed together, one pack per blob type; walking a snapshot used to make one ranged read
    per tree. Packs are immutable (named by their hash), so a cached window never goes stale;
    every blob read from one is still authenticated and verified against its id.
    """

    def __init__(self, backend: Backend, size: int = TREE_WINDOW, count: int = TREE_WINDOWS):
        self._backend = backend
        self._size = size
        self._count = count
        self._windows: dict[tuple[bytes, int], bytes] = {}  # insertion order = LRU order
        self._lock = threading.Lock()

    def read(self, pack: bytes, offset: int, length: int) -> bytes:
        start = offset - offset % self._size
        if offset + length > start + self._size:  # straddles two windows: read it alone
            return self._backend.get_range(pack_key(pack), offset, length)
        slot = (pack, start)
        with self._lock:
            window = self._windows.pop(slot, None)
            if window is not None:
                self._windows[slot] = window  # most recently used last
        if window is None:
            window = self._backend.get_range(pack_key(pack), start, self._size)
            with self._lock:
                self._windows[slot] = window
                while len(self._windows) > self._count:
                    del self._windows[next(iter(self._windows))]
        return window[offset - start : offset - start + length]


class Repository:
    """An opened repository: everything above the backend and below the archiver."""

    def __init__(self, backend: Backend, key: Key, config: RepoConfig) -> None:
        self.backend = backend
        self.key = key
        self.config = config
        self._index: MasterIndex | None = None
        self._index_generation = 0
        self._index_lock = threading.Lock()
        self._tree_windows = _WindowCache(backend)
        self.damaged_snapshots: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        backend: Backend,
        passphrase: str,
        *,
        kdf: keys.KdfParams | None = None,
        **config_overrides: int,
    ) -> tuple[Repository, str]:
        """Create a repository; return it and its printable recovery key."""
        if _exists(backend, "config") or next(iter(backend.list("keys/")), None):
            raise RepositoryExists(f"a repository already exists at {backend.describe()}")
        master = MasterKey.generate()
        key = Key(master)
        config = RepoConfig.new(**config_overrides)
        params = kdf or keys.KdfParams.from_environment()
        keyfile = keys.make_passphrase_keyfile(master, passphrase, params)
        recovery_file, recovery_key = keys.make_recovery_keyfile(master)
        backend.put(f"keys/{keys.keyfile_id(keyfile)}", keyfile)
        backend.put(f"keys/{keys.keyfile_id(recovery_file)}", recovery_file)
        # config goes last: its presence is what makes the location a repository
        backend.put("config", key.encrypt(config.to_json(), CONFIG_AAD))
        return cls(backend, key, config), recovery_key

    @classmethod
    def open(cls, backend: Backend, secret: str) -> Repository:
        try:
            sealed_config = backend.get("config")
        except ObjectNotFound:
            raise RepositoryNotFound(
                f"no Roost repository at {backend.describe()}: check --repo / ROOST_REPO, "
                "or create one with `roost init`"
            ) from None
        master = keys.open_any(_load_keyfiles(backend), secret)
        key = Key(master)
        try:
            config = RepoConfig.from_json(key.decrypt(sealed_config, CONFIG_AAD, "config"))
        except CorruptObject as exc:
            raise CorruptObject(
                f"the repository config at {backend.describe()} is damaged ({exc}); "
                "restore it from a copy of the repository"
            ) from exc
        return cls(backend, key, config)

    # -- keys ---------------------------------------------------------------------------

    def list_keys(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for info in self.backend.list("keys/"):
            out.append((info.key.split("/", 1)[1], keys.parse_keyfile(self.backend.get(info.key))))
        return sorted(out, key=lambda item: str(item[1].get("created", "")))

    def add_passphrase(self, passphrase: str) -> str:
        params = keys.KdfParams.from_environment()
        data = keys.make_passphrase_keyfile(self.key.master, passphrase, params)
        key_id = keys.keyfile_id(data)
        self.backend.put(f"keys/{key_id}", data)
        return key_id

    def remove_key(self, key_id_prefix: str, current_secret: str) -> str:
        matches = [(kid, doc) for kid, doc in self.list_keys() if kid.startswith(key_id_prefix)]
        if len(matches) != 1:
            raise UsageError(f"{len(matches)} keys match {key_id_prefix!r}; give a unique prefix")
        kid, doc = matches[0]
        if keys.open_keyfile(doc, current_secret) is not None:
            raise UsageError("refusing to remove the key you are using; open with another one")
        passphrase_keys = [d for _, d in self.list_keys() if d.get("kind") == "passphrase"]
        if doc.get("kind") == "passphrase" and len(passphrase_keys) <= 1:
            raise UsageError("refusing to remove the last passphrase key")
        self.backend.delete(f"keys/{kid}")
        return kid

    # -- index --------------------------------------------------------------------------

    @property
    def index(self) -> MasterIndex:
        if self._index is None:
            self._index = self.load_index()
        return self._index

    def read_index_files(self) -> dict[bytes, IndexFile]:
        return self._read_index_files(IndexFile.decode)

    def _read_index_files(
        self, decode: Callable[[Key, bytes, str], _Decoded]
    ) -> dict[bytes, _Decoded]:
        """Every index file, each decoded as soon as it is read (the stored bytes go then)."""
        names = [info.key for info in self.backend.list("index/")]

        def read(name: str) -> tuple[bytes, _Decoded | None]:
            fid, _, data = self._read_index_file(name)
            return fid, None if data is None else decode(self.key, data, f"index file {name}")

        if len(names) <= 1:  # no thread pool for a single file
            loaded = [read(name) for name in names]
        else:
            with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
                loaded = list(pool.map(read, names))
        return {fid: decoded for fid, decoded in loaded if decoded is not None}

    def _read_index_file(self, name: str) -> tuple[bytes, str, bytes | None]:
        try:
            fid = bytes.fromhex(name.split("/", 1)[1])
        except ValueError:
            raise CorruptObject(
                f"{name} is not a Roost index file; move it out of index/"
            ) from None
        try:
            return fid, name, self.backend.get(name)
        except ObjectNotFound:
            return (
                fid,
                name,
                None,
            )  # consolidated away by a concurrent prune; its successor is listed

    def load_index(self) -> MasterIndex:
        index = MasterIndex()
        # consume: each file's records go once merged, not after the whole index is built
        index.merge(self._read_index_files(IndexEvents.decode), consume=True)
        self._index = index
        self._index_generation += 1
        return index

    def write_index_file(self, index_file: IndexFile) -> str:
        name, data = index_file.encode(self.key)
        self.backend.put(name, data)
        return name

    # -- blobs --------------------------------------------------------------------------

    def read_blob(self, blob_id: bytes) -> bytes:
        """Fetch, decrypt, decompress and verify one blob against its id.

        Every known copy is tried (live ones first). If a pack has vanished, a concurrent
        prune probably repacked it: the index is reloaded once and the new copy read.
        """
        generation = self._index_generation
        problems: list[RoostError] = []
        for loc in self._read_order(blob_id):
            try:
                return self.read_blob_at(blob_id, loc)
            except (ObjectNotFound, CorruptObject) as exc:
                problems.append(exc)
        if any(isinstance(p, ObjectNotFound) for p in problems):
            self._reload_index(generation)
            for loc in self._read_order(blob_id):
                with contextlib.suppress(ObjectNotFound, CorruptObject):
                    return self.read_blob_at(blob_id, loc)
        short = blob_id.hex()[:16]
        if not problems:
            raise BlobNotFound(f"blob {short} is in no index; run `roost check`")
        damaged = [p for p in problems if isinstance(p, CorruptObject)]
        if damaged:
            raise CorruptObject(f"{damaged[0]}; run `roost check --read-data`")
        raise BlobNotFound(f"blob {short} is missing from storage; run `roost check`")

    def _read_order(self, blob_id: bytes) -> list[Location]:
        found = self.index.locations(blob_id)
        if len(found) < 2:
            return found
        return sorted(found, key=lambda loc: loc.tombstoned_ns != 0)

    def _reload_index(self, seen_generation: int) -> None:
        """Reload the index unless another thread already did since ``seen_generation``."""
        with self._index_lock:
            if self._index_generation == seen_generation:
                self.load_index()

    def read_blob_at(self, blob_id: bytes, loc: Location) -> bytes:
        if loc.type == TREE_BLOB:
            raw = self._tree_windows.read(loc.pack, loc.offset, loc.length)
        else:
            raw = self.backend.get_range(pack_key(loc.pack), loc.offset, loc.length)
        return self.decode_blob(blob_id, loc, raw)

    def decode_blob(self, blob_id: bytes, loc: Location, raw: bytes) -> bytes:
        kind = BLOB_TYPES.get(loc.type, "?")
        what = f"{kind} blob {blob_id.hex()[:16]} in pack {loc.pack.hex()[:16]}"
        payload = self.key.decrypt(raw, blob_aad(loc.type, blob_id), what)
        plain = compress.decompress(loc.compression, payload, loc.raw_length)
        if len(plain) != loc.raw_length or self.key.chunk_id(plain) != blob_id:
            raise CorruptObject(f"{what} does not match its id")
        return plain

    def load_tree(self, tree_id: bytes) -> list[Node]:
        return decode_tree(self.read_blob(tree_id))

    # -- snapshots ----------------------------------------------------------------------

    def save_snapshot(self, snap: Snapshot) -> str:
        sealed = self.key.encrypt(snap.to_json(), SNAPSHOT_AAD)
        snap.id = content_hash(sealed).hex()
        self.backend.put(f"snapshots/{snap.id}", sealed)
        return snap.id

    def snapshot_ids(self) -> list[str]:
        return [info.key.split("/", 1)[1] for info in self.backend.list("snapshots/")]

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        sealed = self.backend.get(f"snapshots/{snapshot_id}")
        what = f"snapshot {snapshot_id[:8]}"
        return Snapshot.from_json(self.key.decrypt(sealed, SNAPSHOT_AAD, what), snapshot_id)

    def list_snapshots(self, *, skip_damaged: bool = False) -> list[Snapshot]:
        """All snapshots, oldest first.

        A damaged snapshot raises, unless ``skip_damaged``: then it is left out and recorded in
        ``damaged_snapshots`` (id -> problem). Prune must never skip: it would delete the data
        that snapshot still references.
        """
        ids = self.snapshot_ids()
        with ThreadPoolExecutor(max_workers=8) as pool:
            loaded = list(pool.map(self._load_snapshot_or_error, ids))
        snaps = []
        for sid, snap, problem in loaded:
            if snap is not None:
                snaps.append(snap)
            elif not skip_damaged:
                raise problem or CorruptObject(f"snapshot {sid[:8]} cannot be read")
            else:
                self.damaged_snapshots[sid] = str(problem)
        return sorted(snaps, key=lambda s: (s.time, s.id))

    def _load_snapshot_or_error(self, sid: str) -> tuple[str, Snapshot | None, RoostError | None]:
        try:
            return sid, self.load_snapshot(sid), None
        except (CorruptObject, UnsupportedFormat, ObjectNotFound) as exc:
            return sid, None, exc

    def find_snapshot(self, ref: str) -> Snapshot:
        """Resolve 'latest' or a unique id prefix."""
        if ref == "latest":
            snaps = self.list_snapshots(skip_damaged=True)
            if not snaps:
                raise UsageError("the repository has no snapshots yet")
            return snaps[-1]
        matches = [sid for sid in self.snapshot_ids() if sid.startswith(ref.lower())]
        if not matches:
            raise UsageError(f"no snapshot matches {ref!r}; list them with `roost snapshots`")
        if len(matches) > 1:
            raise UsageError(f"{len(matches)} snapshots match {ref!r}; give more characters")
        return self.load_snapshot(matches[0])

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.backend.delete(f"snapshots/{snapshot_id}")

    def walk_trees(self, tree_id: bytes) -> Iterator[tuple[bytes, list[Node]]]:
        """Yield (tree id, nodes) for a tree and all its subtrees, depth first."""
        stack = [tree_id]
        while stack:
            current = stack.pop()
            nodes = self.load_tree(current)
            yield current, nodes
            stack.extend(n.subtree for n in nodes if n.subtree is not None)


def _exists(backend: Backend, key: str) -> bool:
    try:
        backend.stat(key)
    except ObjectNotFound:
        return False
    return True


def _load_keyfiles(backend: Backend) -> list[dict[str, Any]]:
    docs = [keys.parse_keyfile(backend.get(info.key)) for info in backend.list("keys/")]
    if not docs:
        raise CorruptObject(f"the repository at {backend.describe()} has no key files")
    return docs
