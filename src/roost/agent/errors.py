"""What can go wrong between the agent and its server; each message says what to do.

RoostError (roost.errors)
└── AgentError                  the agent cannot do what it was asked
    ├── NotEnrolled             no agent.json in the agent home
    ├── AlreadyEnrolled         enroll over an existing agent.json
    ├── InsecureServerUrl       http:// to a host that is not loopback
    ├── ServerUnreachable       connect/TLS/timeout failure (transient: the runner retries)
    ├── FingerprintMismatch     the server's certificate is not the pinned one
    └── ServerRefused           the server answered with an HTTP error; carries status + detail

Job cancellation is deliberately *not* a RoostError (see ``roost.agent.reporting``): engine
code catches RoostError per file, and a cancel must stop the whole job.
"""

from __future__ import annotations

from roost.errors import RoostError, UsageError


class AgentError(RoostError):
    """The agent failed."""

    exit_code = 20


class NotEnrolled(AgentError):
    """This agent is not enrolled: run `roost agent enroll --server URL --token TOKEN` first."""

    exit_code = 21


class AgentAlreadyRunning(AgentError):
    """Another `roost agent run` uses this agent home; stop it first (one agent per home)."""


class AlreadyEnrolled(AgentError):
    """This agent home already holds an enrollment; use another --home or pass --force."""

    exit_code = 21


class InsecureServerUrl(UsageError):
    """Plain http:// is only allowed to a loopback server (development); use https://."""


class ServerUnreachable(AgentError):
    """The server cannot be reached; check the URL, the network and that the server runs."""

    exit_code = 22


class FingerprintMismatch(AgentError):
    """The server's TLS certificate is not the pinned one."""

    exit_code = 23


class ServerRefused(AgentError):
    """The server refused the request."""

    exit_code = 24

    def __init__(self, status: int, detail: str, what: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"the server refused {what} (HTTP {status}): {detail}")

    @property
    def transient(self) -> bool:
        """Worth retrying: the server is overloaded or briefly broken, not saying no."""
        return self.status >= 500 or self.status in (408, 429)
