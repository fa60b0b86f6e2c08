"""Which entries a backup skips: gitignore-style patterns, a size limit, other filesystems.

Patterns follow .gitignore rules (via pathspec) and are matched against the path relative to
the source root it was found under, so ``*.tmp`` skips every .tmp file, ``/cache`` only the
top-level cache, ``build/`` only directories, and ``!keep.tmp`` re-includes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from roost.errors import UsageError

_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """Parse '500', '10K', '1.5M', '2G', '1TiB' into bytes."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = cleaned, ""
    if cleaned and cleaned[-1] in _SIZE_UNITS:
        number, unit = cleaned[:-1], cleaned[-1]
    try:
        value = float(number)
    except ValueError:
        raise UsageError(
            f"cannot read size {text!r}: use a number with an optional K, M, G or T suffix"
        ) from None
    if value < 0:
        raise UsageError(f"size {text!r} must not be negative")
    return int(value * _SIZE_UNITS[unit])


def read_exclude_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read exclude file {path}: {exc.strerror}") from exc
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class ExcludeRules:
    patterns: list[str] = field(default_factory=list)
    larger_than: int | None = None
    one_file_system: bool = False

    def __post_init__(self) -> None:
        try:
            self._spec = pathspec.GitIgnoreSpec.from_lines(self.patterns)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"invalid exclude pattern: {exc}") from exc

    @classmethod
    def build(
        cls,
        patterns: Iterable[str] = (),
        exclude_files: Iterable[Path] = (),
        larger_than: str | None = None,
        one_file_system: bool = False,
    ) -> ExcludeRules:
        all_patterns = list(patterns)
        for path in exclude_files:
            all_patterns += read_exclude_file(path)
        limit = parse_size(larger_than) if larger_than else None
        return cls(all_patterns, limit, one_file_system)

    def excludes_path(self, relative: bytes, is_dir: bool) -> bool:
        if not self.patterns or not relative:
            return False
        text = os.fsdecode(relative)
        return bool(self._spec.match_file(text + "/" if is_dir else text))

    def excludes_size(self, size: int) -> bool:
        return self.larger_than is not None and size > self.larger_than
