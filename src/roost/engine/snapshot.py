"""Snapshots: the root of one backup, written last (after its packs and index).

A snapshot object (``snapshots/<blake3 of the stored object>``) is a crypto object with
associated data ``b"snapshot"`` holding UTF-8 JSON (version 1)::

    {"v": 1, "time": "2026-11-26T01:02:03.123456+00:00", "hostname": "...", "username": "...",
     "paths": ["/srv/share", ...], "tree": "<root tree id hex>", "parent": "<id>" | null,
     "tags": [...], "excludes": [...], "summary": {...}, "missed": [{"path": .., "reason": ..}],
     "program": "roost 0.1.0"}

Paths are the absolute source paths as given; non-UTF-8 bytes are kept with Python's
surrogateescape and written as JSON ``\\udcXX`` escapes, which round-trip exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from roost.errors import CorruptObject, UnsupportedFormat

SNAPSHOT_VERSION = 1
SNAPSHOT_AAD = b"snapshot"


@dataclass
class Snapshot:
    time: datetime
    hostname: str
    username: str
    paths: list[str]
    tree: bytes
    parent: str | None = None
    tags: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    missed: list[dict[str, str]] = field(default_factory=list)
    program: str = ""
    id: str = ""  # set once stored

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def to_json(self) -> bytes:
        doc = {
            "v": SNAPSHOT_VERSION,
            "time": self.time.isoformat(),
            "hostname": self.hostname,
            "username": self.username,
            "paths": self.paths,
            "tree": self.tree.hex(),
            "parent": self.parent,
            "tags": self.tags,
            "excludes": self.excludes,
            "summary": self.summary,
            "missed": self.missed,
            "program": self.program,
        }
        return json.dumps(doc, ensure_ascii=True).encode()

    @classmethod
    def from_json(cls, data: bytes, snapshot_id: str) -> Snapshot:
        try:
            doc = json.loads(data)
            if doc["v"] != SNAPSHOT_VERSION:
                raise UnsupportedFormat(f"snapshot version {doc['v']} is newer than this Roost")
            return cls(
                time=datetime.fromisoformat(doc["time"]),
                hostname=str(doc["hostname"]),
                username=str(doc["username"]),
                paths=[str(p) for p in doc["paths"]],
                tree=bytes.fromhex(doc["tree"]),
                parent=doc.get("parent"),
                tags=list(doc.get("tags", [])),
                excludes=list(doc.get("excludes", [])),
                summary=dict(doc.get("summary", {})),
                missed=list(doc.get("missed", [])),
                program=str(doc.get("program", "")),
                id=snapshot_id,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptObject(f"snapshot {snapshot_id[:8]} is malformed") from exc
