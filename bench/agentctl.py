"""What an admin does, as one timed command: ask the server for a job, wait until it is over.

    agentctl.py STATE status                 # the agent is online (the roost-agent "init" step)
    agentctl.py STATE backup                 # backup now of the bench set, wait for the job
    agentctl.py STATE restore --target DIR   # restore its latest snapshot on the agent, wait

STATE is the JSON file ``agentpath.agent_service`` writes (server URL, certificate
fingerprint, admin session token, set name). The exit status is 0 when the job succeeded,
1 otherwise; stdout gets one JSON line: the job's id, final state, level and summary, and
``request_to_final_seconds``, from just before the request to the answer that saw the job
finished (the process's own wall time, measured by the benchmark, adds start-up to that).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx

from roost.agent.transport import (
    fetch_certificate,
    fingerprint_of,
    parse_server_url,
    pinned_context,
)

POLL_SECONDS = 0.2  # between two asks, if the server answers without waiting
WAIT_SECONDS = 30.0  # each ask waits this long on the server for the job's state to change
TIMEOUT_SECONDS = 6 * 3600
REPORTED = ("id", "kind", "state", "reason", "level", "summary")
REPORTED_TIMES = ("created_at", "dispatched_at", "started_at", "finished_at")
FINAL = {"succeeded", "succeeded_with_errors", "failed", "aborted", "cancelled", "skipped"}


def client(state: dict[str, Any]) -> httpx.Client:
    address = parse_server_url(state["url"])
    der = fetch_certificate(address)
    if state["fingerprint"] is not None and fingerprint_of(der) != state["fingerprint"]:
        raise SystemExit(f"{state['url']} presents another certificate than it printed")
    return httpx.Client(
        base_url=f"{state['url']}/api/v1",
        verify=pinned_context(der),
        timeout=60,
        headers={"Authorization": f"Bearer {state['token']}"},
    )


def call(api: httpx.Client, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    reply = api.request(method, path, json=body)
    if reply.status_code not in (200, 201):
        raise SystemExit(f"{method} {path}: HTTP {reply.status_code}: {reply.text[:500]}")
    return reply.json()


def wait(api: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job once it has ended: seen as it ends (GET /jobs/{id}?wait= wakes on it)."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    seen = None
    while True:
        asked = time.monotonic()
        job: dict[str, Any] = call(api, "GET", f"/jobs/{job_id}?wait={WAIT_SECONDS:g}")
        if job["state"] in FINAL:
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} is still {job['state']} after {TIMEOUT_SECONDS} s")
        if job["state"] == seen and time.monotonic() - asked < POLL_SECONDS:
            time.sleep(POLL_SECONDS)  # the same state at once: a server without ?wait=
        seen = job["state"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/agentctl.py")
    parser.add_argument("state")
    parser.add_argument("action", choices=["status", "backup", "restore"])
    parser.add_argument("--target", help="restore: the directory on the agent")
    args = parser.parse_args(argv)
    with open(args.state) as handle:
        state = json.load(handle)
    with client(state) as api:
        if args.action == "status":
            agents = call(api, "GET", "/agents")
            print(json.dumps(agents))
            return 0 if agents and all(a.get("state") == "online" for a in agents) else 1
        started = time.perf_counter()
        if args.action == "backup":
            queued = call(api, "POST", f"/sets/{state['set']}/backup")
        else:
            if not args.target:
                parser.error("restore needs --target")
            body = {"set": state["set"], "snapshot": "latest", "target": args.target}
            queued = call(api, "POST", "/restores", {**body, "conflict": "overwrite"})
        job = wait(api, queued["id"])
        seconds = time.perf_counter() - started
    shown = {key: job.get(key) for key in REPORTED + REPORTED_TIMES}
    print(json.dumps({**shown, "request_to_final_seconds": seconds}))
    if job["state"] != "succeeded":
        print(f"job {job['id']} ended {job['state']}: {job.get('reason')}", file=sys.stderr)
        for line in job.get("log", [])[-20:]:
            print(f"{line.get('level')}: {line.get('message')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
