"""One job's channel to the server: events, the job log, and the cancel flag.

Progress events are best effort: a failed one is logged locally and the job goes on (the next
one carries newer numbers, and buffered log lines are kept for it). The final event is
retried with backoff for a while, because the job's outcome must reach the catalog; the job
stays in the poll's ``running_jobs`` meanwhile, so the server does not call it lost.

Every response may carry ``cancel``; the reporter remembers it, and the job checks
:meth:`JobReporter.raise_if_cancelled` at its safe points (the progress callbacks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from roost.agent.api import ServerApi
from roost.agent.errors import ServerRefused, ServerUnreachable
from roost.agent.paths import wire_text
from roost.errors import RoostError
from roost.protocol.agent_api import JobEvent, JobResult, LogLine, MissedFile

log = logging.getLogger("roost.agent")

LogLevel = Literal["info", "warning", "error"]
MAX_LOG_LINES = 1000  # per event (protocol limit)
MAX_MISSED = 10000  # per event (protocol limit)
MAX_MESSAGE = 4000
MAX_BUFFERED = 5000  # log lines kept while the server is unreachable
GONE = (404, 409, 410)  # the server no longer tracks this job: stop working on it


FinalState = Literal["succeeded", "succeeded_with_errors", "failed", "aborted", "cancelled"]


@dataclass
class Outcome:
    """How a job ended. Missed files travel here, not in a JobEvent: there may be more of
    them than one event can carry, and the reporter splits them."""

    state: FinalState
    result: JobResult | None = None
    error: str | None = None
    missed: list[MissedFile] = field(default_factory=list)


class JobCancelled(Exception):
    """The job must stop now. Not a RoostError on purpose: per-file error handlers in the
    engine catch RoostError and OSError, and a cancel must pass through them."""

    def __init__(self, reason: str, state: Literal["cancelled", "aborted"] = "cancelled"):
        super().__init__(reason)
        self.reason = reason
        self.state: Literal["cancelled", "aborted"] = state


def describe_error(exc: BaseException) -> str:
    """One line for the job's error text; foreign exceptions keep their type name."""
    text = wire_text(" ".join(str(exc).split()))
    if isinstance(exc, RoostError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class JobReporter:
    def __init__(
        self,
        api: ServerApi,
        job_id: str,
        *,
        stop: threading.Event | None = None,
        final_retry_seconds: float = 3600.0,
        wait: Callable[[float], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.job_id = job_id
        self._stop = stop if stop is not None else threading.Event()
        self._final_retry_seconds = final_retry_seconds
        # Waiting on the stop event means a stopping agent does not sit out a long backoff.
        self._wait = wait if wait is not None else self._stop.wait
        self._clock = clock
        self._lock = threading.Lock()
        self._logs: list[LogLine] = []
        self._cancel: JobCancelled | None = None

    # -- the job log ----------------------------------------------------------------------

    def log(self, message: str, level: LogLevel = "info") -> None:
        text = wire_text(message)
        getattr(log, "info" if level == "info" else level)("job %s: %s", self.job_id, text)
        line = LogLine(at=datetime.now(UTC).isoformat(), level=level, message=_clip(text))
        with self._lock:
            self._logs.append(line)
            del self._logs[:-MAX_BUFFERED]

    def _take_logs(self) -> list[LogLine]:
        with self._lock:
            taken, self._logs = self._logs, []
        return taken

    def _give_back(self, lines: list[LogLine]) -> None:
        with self._lock:
            self._logs[:0] = lines
            del self._logs[:-MAX_BUFFERED]

    # -- cancellation ---------------------------------------------------------------------

    def raise_if_cancelled(self) -> None:
        if self._cancel is not None:
            raise self._cancel
        if self._stop.is_set():
            raise JobCancelled("the agent was stopped during the job", "aborted")

    def _note_cancel(self, reason: str, state: Literal["cancelled", "aborted"]) -> None:
        if self._cancel is None:
            self._cancel = JobCancelled(reason, state)

    # -- events ---------------------------------------------------------------------------

    def send(self, event: JobEvent | None = None) -> bool:
        """Send a non-final event with the buffered log lines; False if it did not arrive."""
        lines = self._take_logs()
        try:
            self._post_with_logs(event or JobEvent(), lines)
        except ServerRefused as exc:
            if exc.status in GONE:
                self._note_cancel(f"the server no longer tracks this job ({exc.detail})", "aborted")
            log.warning("job %s: event not delivered: %s", self.job_id, exc)
            return False
        except ServerUnreachable as exc:
            self._give_back(lines)
            log.warning("job %s: event not delivered: %s", self.job_id, exc)
            return False
        return True

    def finish(self, outcome: Outcome) -> bool:
        """Send the final event (state, result, every missed file), retrying; True if sent."""
        deadline = self._clock() + self._final_retry_seconds
        event = JobEvent(state=outcome.state, result=outcome.result, error=outcome.error)
        missed = list(outcome.missed)  # chunks leave this list as they arrive: no duplicates
        delay = 1.0
        while True:
            try:
                self._send_final(event, missed)
                return True
            except ServerRefused as exc:
                if not exc.transient:
                    log.error("job %s: final state %s refused: %s", self.job_id, event.state, exc)
                    return False
                failure: Exception = exc
            except ServerUnreachable as exc:
                failure = exc
            if self._clock() + delay > deadline or self._wait(delay):
                log.error("job %s: final state not delivered: %s", self.job_id, failure)
                return False
            log.warning("job %s: final state not delivered (%s); retrying", self.job_id, failure)
            delay = min(delay * 2, 60.0)

    def _send_final(self, event: JobEvent, missed: list[MissedFile]) -> None:
        while len(missed) > MAX_MISSED:
            self._post(JobEvent(missed=missed[:MAX_MISSED]))
            del missed[:MAX_MISSED]
        lines = self._take_logs()
        try:
            self._post_with_logs(event.model_copy(update={"missed": list(missed)}), lines)
        except (ServerRefused, ServerUnreachable):
            self._give_back(lines)
            raise

    def _post_with_logs(self, event: JobEvent, lines: list[LogLine]) -> None:
        """Post ``event`` carrying ``lines``; lines beyond one event's limit go first, alone.
        ``lines`` keeps only what was not delivered, for the caller to give back."""
        while len(lines) > MAX_LOG_LINES:
            self._post(JobEvent(log=lines[:MAX_LOG_LINES]))
            del lines[:MAX_LOG_LINES]
        self._post(event.model_copy(update={"log": list(lines)}))
        lines.clear()

    def _post(self, event: JobEvent) -> None:
        response = self.api.send_event(self.job_id, event)
        if response.cancel:
            reason = response.cancel_reason or "cancelled by an administrator"
            self._note_cancel(reason, "cancelled")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."
