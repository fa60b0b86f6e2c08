"""Every failure a user can act on has its own exception; the docstring is the advice.

RoostError                      base; carries an exit code for the CLI
├── RepositoryError
│   ├── RepositoryNotFound      no repository at the given location
│   ├── RepositoryExists        init over an existing repository
│   ├── WrongPassphrase         no key file opens with the passphrase
│   ├── CorruptObject           an object failed authentication or parsing
│   ├── UnsupportedFormat       written by a newer Roost
│   └── BlobNotFound            a snapshot references data that is not stored
├── StorageError                the backend failed (I/O, network, permissions)
│   ├── ObjectNotFound
│   └── ObjectExists
├── SourceError                 a backup source path is missing or unreadable
├── BackupWorkerError           a backup worker process died (killed, out of memory)
├── RestoreTargetError          the restore target cannot be written
└── UsageError                  the command line asks for something impossible
"""

from __future__ import annotations


class RoostError(Exception):
    """Roost failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class RepositoryError(RoostError):
    """The repository cannot be used."""


class RepositoryNotFound(RepositoryError):
    """No Roost repository here: check --repo / ROOST_REPO, or create one with `roost init`."""

    exit_code = 10


class RepositoryExists(RepositoryError):
    """A repository already exists here; choose an empty location for `roost init`."""


class WrongPassphrase(RepositoryError):
    """Wrong passphrase: no key of this repository opens with it."""

    exit_code = 12


class CorruptObject(RepositoryError):
    """An object in the repository is damaged; run `roost check --read-data`."""

    exit_code = 13


class UnsupportedFormat(RepositoryError):
    """This repository was written by a newer Roost; upgrade Roost to read it."""


class BlobNotFound(RepositoryError):
    """The repository lacks data a snapshot needs; run `roost check` and `roost repair index`."""

    exit_code = 13


class StorageError(RoostError):
    """The storage backend failed."""

    exit_code = 14


class ObjectNotFound(StorageError):
    """The object does not exist in storage."""


class ObjectExists(StorageError):
    """The object already exists in storage and objects are never overwritten."""


class SourceError(RoostError):
    """A backup source cannot be read."""

    exit_code = 15


class BackupWorkerError(RoostError):
    """A backup worker process stopped; run the backup again (it resumes from what was stored)."""

    exit_code = 1


class RestoreTargetError(RoostError):
    """The restore target cannot be written."""

    exit_code = 16


class UsageError(RoostError):
    """The command line asks for something impossible."""

    exit_code = 2
