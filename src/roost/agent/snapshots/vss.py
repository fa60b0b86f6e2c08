"""VSS (Windows, reference step 4): a shadow copy of each volume that holds a source path.

The reference checks the VSS service and starts it when stopped; so does this provider, and
it says so in the job log. Shadow copies are made through WMI's ``Win32_ShadowCopy.Create``
in the ``ClientAccessible`` context (they outlive the creating process, which is why they are
recorded in a state file and deleted explicitly), read through their device path
``\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopyN``, and removed with ``vssadmin``.
Network shares (UNC paths) live on another machine and cannot be shadow-copied here.

All path handling uses ``ntpath`` and all system access goes through the runner, so this
module is tested on Linux with a fake runner.
"""

from __future__ import annotations

import math
import ntpath
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from roost.agent.snapshots.base import (
    CommandRunner,
    PreparedSnapshot,
    SnapshotError,
    StateFile,
    check_job_id,
    one_line,
    roll_back,
    unique,
)

STATE_FILE = "vss-shadows.json"
CREATE_TIMEOUT = 600.0  # VSS writers may take minutes to freeze
_SHADOW_ID = re.compile(r"\{[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\}")
_DEVICE = re.compile(r"\\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy\d+")
_SERVICE_STATE = re.compile(r"STATE\s*:\s*\d+\s+(\w+)")
_SC_ALREADY_RUNNING = 1056

# Win32_ShadowCopy.Create return values, as documented by Microsoft.
CREATE_ERRORS = {
    1: "access denied (the agent must run as an administrator)",
    2: "invalid argument",
    3: "volume not found",
    4: "volume not supported",
    5: "unsupported shadow copy context",
    6: "insufficient storage for the shadow copy",
    7: "volume is in use",
    8: "maximum number of shadow copies reached",
    9: "another shadow copy operation is already in progress",
    10: "a shadow copy provider vetoed the operation",
    11: "shadow copy provider not registered",
    12: "shadow copy provider failure",
    13: "unknown error",
}


class VssProvider:
    """Shadow copies of the local volumes (drive letters) that hold the source paths."""

    name = "vss"

    def __init__(
        self,
        runner: CommandRunner,
        state_dir: Path,
        *,
        sleep: Callable[[float], None] = time.sleep,
        start_timeout: float = 60.0,
        poll_interval: float = 1.0,
        path_exists: Callable[[str], bool] = os.path.exists,
    ) -> None:
        self._runner = runner
        self._state = StateFile(Path(state_dir) / STATE_FILE)
        self._sleep = sleep
        self._polls = max(1, math.ceil(start_timeout / poll_interval))
        self._poll_interval = poll_interval
        self._exists = path_exists

    def unsupported_reason(self, paths: list[str]) -> str | None:
        if not paths:
            return "no paths to snapshot"
        try:
            for path in paths:
                volume_of(path)
        except SnapshotError as exc:
            return str(exc)
        return None

    def applicable(self, paths: list[str]) -> bool:
        return self.unsupported_reason(paths) is None

    def create(self, paths: list[str], job_id: str) -> PreparedSnapshot:
        """Shadow-copy each volume once; ``job_id`` is only checked (VSS names shadows itself)."""
        check_job_id(job_id)
        volumes = {path: volume_of(path) for path in paths}
        snap = PreparedSnapshot(self.name, list(paths), {})
        devices = {}
        try:
            self._ensure_service(snap.log)
            for volume in unique(volumes.values()):
                devices[volume] = self._shadow(volume, snap)
        except BaseException as exc:
            roll_back(self, snap, exc)
            raise
        for path, volume in volumes.items():
            snap.read_paths[path] = devices[volume] + path_on_volume(path)
        return snap

    def validate(self, snap: PreparedSnapshot) -> None:
        for shadow_id in snap.handles:
            if not self._listed(shadow_id):
                raise SnapshotError(f"VSS shadow copy {shadow_id} is not listed by vssadmin")
        for source, read_path in snap.read_paths.items():
            if not self._exists(read_path):
                raise SnapshotError(f"{source} is absent from the shadow copy (no {read_path})")

    def delete(self, snap: PreparedSnapshot) -> None:
        errors = []
        for shadow_id in snap.handles:
            try:
                self._runner.run(delete_command(shadow_id))
            except SnapshotError as exc:
                errors.append(str(exc))
                continue
            self._state.remove(shadow_id)
        if errors:
            raise SnapshotError("; ".join(errors))

    def cleanup_leftovers(self) -> list[str]:
        """Delete every recorded shadow copy; records of ones already gone are dropped."""
        removed, errors = [], []
        for shadow_id in self._state.entries():
            result = self._runner.run(delete_command(shadow_id), check=False)
            if result.returncode == 0:
                removed.append(shadow_id)
            elif self._listed(shadow_id):
                errors.append(f"{shadow_id}: {one_line(result.stdout + result.stderr)}")
                continue
            self._state.remove(shadow_id)
        if errors:
            raise SnapshotError(f"removed {removed or 'nothing'}; failed: {'; '.join(errors)}")
        return removed

    def _ensure_service(self, log: list[str]) -> None:
        """Reference step 4: VSS must run; start it when stopped and wait until it runs."""
        state = self._service_state()
        if state == "RUNNING":
            return
        if state == "STOPPED":
            self._start_service()
        elif state != "START_PENDING":
            raise SnapshotError(f"the VSS service is {state}; it must be running")
        self._wait_running()
        if state == "STOPPED":
            log.append("VSS service was stopped; started it")
        else:
            log.append("VSS service was starting; waited until it ran")

    def _service_state(self) -> str:
        result = self._runner.run(["sc", "query", "VSS"], check=False)
        match = _SERVICE_STATE.search(result.stdout)
        if match is None:
            detail = one_line(result.stdout + result.stderr)
            raise SnapshotError(f"cannot read the VSS service state: {detail}")
        return match.group(1)

    def _start_service(self) -> None:
        result = self._runner.run(["sc", "start", "VSS"], check=False)
        if result.returncode not in (0, _SC_ALREADY_RUNNING):
            detail = one_line(result.stdout + result.stderr)
            raise SnapshotError(f"could not start the VSS service: {detail}")

    def _wait_running(self) -> None:
        state = "?"
        for _ in range(self._polls):
            state = self._service_state()
            if state == "RUNNING":
                return
            self._sleep(self._poll_interval)
        raise SnapshotError(f"the VSS service did not start (still {state})")

    def _shadow(self, volume: str, snap: PreparedSnapshot) -> str:
        shadow_id = self._create_shadow(volume)
        self._state.add(shadow_id)
        snap.handles.append(shadow_id)
        device = self._device_of(shadow_id)
        snap.log.append(f"VSS shadow copy {shadow_id} of {volume} created ({device})")
        return device

    def _create_shadow(self, volume: str) -> str:
        out = self._powershell(create_script(volume), timeout=CREATE_TIMEOUT)
        values = dict(line.strip().split("=", 1) for line in out.splitlines() if "=" in line)
        code = values.get("ReturnValue", "")
        if code != "0":
            meaning = CREATE_ERRORS.get(int(code)) if code.isdigit() else None
            raise SnapshotError(
                f"VSS could not shadow-copy {volume}: {meaning or f'return value {code!r}'}"
            )
        shadow_id = values.get("ShadowID", "")
        if not _SHADOW_ID.fullmatch(shadow_id):
            raise SnapshotError(f"VSS returned no shadow copy id for {volume} ({shadow_id!r})")
        return shadow_id

    def _device_of(self, shadow_id: str) -> str:
        device = self._powershell(device_script(shadow_id)).strip()
        if not _DEVICE.fullmatch(device):
            raise SnapshotError(f"VSS shadow copy {shadow_id} has no device path ({device!r})")
        return device

    def _listed(self, shadow_id: str) -> bool:
        result = self._runner.run(list_command(shadow_id), check=False)
        return result.returncode == 0 and shadow_id.lower() in result.stdout.lower()

    def _powershell(self, script: str, *, timeout: float = 120) -> str:
        argv = ["powershell", "-NoProfile", "-NonInteractive", "-Command", script]
        return self._runner.run(argv, timeout=timeout).stdout


def create_script(volume: str) -> str:
    """PowerShell that creates a shadow copy and prints ``ReturnValue=`` and ``ShadowID=``."""
    return (
        f"$r = (Get-WmiObject -List Win32_ShadowCopy).Create('{volume}', 'ClientAccessible'); "
        '"ReturnValue=$($r.ReturnValue)"; "ShadowID=$($r.ShadowID)"'
    )


def device_script(shadow_id: str) -> str:
    return (
        f"(Get-WmiObject Win32_ShadowCopy | Where-Object {{ $_.ID -eq '{shadow_id}' }})"
        ".DeviceObject"
    )


def list_command(shadow_id: str) -> list[str]:
    return ["vssadmin", "list", "shadows", f"/shadow={shadow_id}"]


def delete_command(shadow_id: str) -> list[str]:
    return ["vssadmin", "delete", "shadows", f"/shadow={shadow_id}", "/quiet"]


def volume_of(path: str) -> str:
    """The volume root (``C:\\``) a path lives on; SnapshotError when it has none here."""
    drive, tail = ntpath.splitdrive(_without_long_prefix(path))
    if drive.startswith(("\\\\", "//")):
        raise SnapshotError(f"UNC paths cannot be shadow-copied ({path})")
    if len(drive) != 2 or not drive[0].isalpha() or not tail.startswith(("\\", "/")):
        raise SnapshotError(f"{path} is not an absolute path on a drive letter")
    return drive.upper() + "\\"


def path_on_volume(path: str) -> str:
    """``C:\\data\\x`` -> ``\\data\\x``: the part to append to the shadow copy's device."""
    return ntpath.normpath(ntpath.splitdrive(_without_long_prefix(path))[1])


def _without_long_prefix(path: str) -> str:
    """``\\\\?\\C:\\x`` is ``C:\\x``; ``\\\\?\\UNC\\srv\\share`` stays a UNC path."""
    if path.startswith("\\\\?\\") and re.match(r"[A-Za-z]:", path[4:6]):
        return path[4:]
    return path
