"""The HTTP side of `roost ctl`: which server, trusting its certificate, logging in, errors.

* Server: ``--server`` / ``ROOST_SERVER``, else the one ``roost ctl login`` saved last.
* Trust: the SHA-256 fingerprint from ``--fingerprint`` / ``ROOST_FINGERPRINT``, else the one
  saved for that server. With nothing pinned an https:// server is refused, never trusted
  silently. The TLS work is the agent's (``roost.agent.transport.connect``): it returns the
  fingerprint it saw and a client that trusts exactly that certificate; the pin is compared
  here so that the message gives an admin's advice, not an agent's.
* Session: the token saved by ``roost ctl login``, or a login as ``ROOST_USER`` (default
  ``admin``) with ``ROOST_ADMIN_PASSWORD``, cached the same way. A cached token the server no
  longer accepts (401) is replaced by one new login when the password is in the environment.
* Config file (``ROOST_CTL_CONFIG``, default ``~/.config/roost/ctl.json``, mode 0600)::

      {"version": 1, "current": "https://host:8443",
       "servers": {"https://host:8443": {"fingerprint": "AB:..", "user": "admin",
                                         "token": "...", "expires_at": "..."}}}

Every failure becomes a ``RoostError`` whose exit code says what kind it is (see CtlError).
"""

from __future__ import annotations

import json
import os
import ssl
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from roost.agent.api import describe_transport_error, error_detail
from roost.agent.errors import InsecureServerUrl, ServerUnreachable
from roost.agent.transport import connect, normalise_fingerprint, parse_server_url
from roost.errors import RoostError, UsageError

CONFIG_ENV = "ROOST_CTL_CONFIG"
USER_ENV = "ROOST_USER"
PASSWORD_ENV = "ROOST_ADMIN_PASSWORD"
DEFAULT_USER = "admin"
API_PREFIX = "/api/v1"
CONFIG_VERSION = 1
TIMEOUT = httpx.Timeout(120.0, connect=15.0)
NO_SERVER = (
    "no server given: pass --server https://HOST:PORT (or set ROOST_SERVER), "
    "or run `roost ctl --server URL --fingerprint FP login` once"
)


class CtlError(RoostError):
    """The server refused the request."""

    exit_code = 1


class NotFoundError(CtlError):
    """No such object on the server."""

    exit_code = 4


class AuthError(CtlError):
    """Not logged in, not allowed, or the server is not the pinned one."""

    exit_code = 5


class ConflictError(CtlError):
    """The request clashes with the server's current state."""

    exit_code = 6


class UnreachableError(CtlError):
    """The server cannot be reached."""

    exit_code = 7


_BY_STATUS: dict[int, type[RoostError]] = {
    400: UsageError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    422: UsageError,
}


def error_for(response: httpx.Response) -> RoostError:
    """The API's ``detail`` as the error of its kind (exit code)."""
    return _BY_STATUS.get(response.status_code, CtlError)(error_detail(response))


# -- config file ----------------------------------------------------------------------------


@dataclass
class ServerEntry:
    fingerprint: str | None = None
    user: str | None = None
    token: str | None = None
    expires_at: str | None = None


@dataclass
class CtlConfig:
    path: Path
    current: str | None = None
    servers: dict[str, ServerEntry] = field(default_factory=dict)

    def entry(self, url: str) -> ServerEntry:
        return self.servers.get(url) or ServerEntry()

    def save(self) -> None:
        doc = {
            "version": CONFIG_VERSION,
            "current": self.current,
            "servers": {url: asdict(entry) for url, entry in self.servers.items()},
        }
        _write_private(self.path, json.dumps(doc, indent=2) + "\n")


def config_path() -> Path:
    override = os.environ.get(CONFIG_ENV)
    return Path(override) if override else Path.home() / ".config" / "roost" / "ctl.json"


def load_config(path: Path | None = None) -> CtlConfig:
    path = path or config_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        servers = {url: ServerEntry(**entry) for url, entry in doc.get("servers", {}).items()}
        return CtlConfig(path, doc.get("current"), servers)
    except FileNotFoundError:
        return CtlConfig(path)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"cannot read {path}: {exc}; delete it and log in again with `roost ctl login`"
        ) from None


def _write_private(path: Path, text: str) -> None:
    """Atomically, mode 0600 from the start (the file holds a session token)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-ctl-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- which server, trusted how --------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str  # normalised: scheme://host:port
    fingerprint: str | None  # None only for http:// (loopback development servers)


def resolve_target(server: str | None, fingerprint: str | None, config: CtlConfig) -> Target:
    given = server or config.current
    if not given:
        raise UsageError(NO_SERVER)
    try:
        address = parse_server_url(given)
    except InsecureServerUrl:
        raise UsageError(
            f"refusing plain http:// to {given}: the session token and passwords would travel "
            "in clear text; use https:// (http:// is only for a server on this machine)"
        ) from None
    pinned = normalise_fingerprint(fingerprint) if fingerprint else None
    pinned = pinned or config.entry(address.url).fingerprint
    if address.scheme == "https" and pinned is None:
        raise UsageError(
            f"no certificate fingerprint pinned for {address.url}: pass --fingerprint "
            "(or set ROOST_FINGERPRINT) with the SHA-256 fingerprint `roost server` printed "
            "at start; it is saved by `roost ctl login`"
        )
    return Target(address.url, pinned)


def open_client(target: Target) -> httpx.Client:
    """A client for ``/api/v1`` of the target that trusts only the pinned certificate."""
    try:
        connection = connect(target.url, None, timeout=TIMEOUT)
    except ServerUnreachable as exc:
        raise unreachable(target.url, exc.__cause__ or exc) from None
    seen = connection.fingerprint
    if target.fingerprint is not None and seen != target.fingerprint:
        connection.client.close()
        raise AuthError(
            f"the server's certificate fingerprint {seen} does not match the pinned "
            f"{target.fingerprint}: {target.url} may not be your Roost server (or someone is "
            "intercepting the connection); if its certificate was replaced on purpose, pass "
            "the new one with --fingerprint"
        )
    connection.client.base_url = httpx.URL(connection.address.url + API_PREFIX)
    return connection.client


def unreachable(url: str, cause: BaseException) -> UnreachableError:
    if isinstance(cause, httpx.TransportError):
        reason = describe_transport_error(cause)
    elif isinstance(cause, ssl.SSLError):
        reason = f"TLS handshake failed ({cause.reason or cause})"
    elif isinstance(cause, OSError) and cause.strerror:
        reason = cause.strerror.lower()
    else:
        reason = str(cause) or type(cause).__name__
    return UnreachableError(
        f"cannot reach the server at {url}: {reason}; is `roost server` running?"
    )


# -- requests -------------------------------------------------------------------------------


def api_path(*parts: str) -> str:
    """``/sets/NAME/snapshots``: each part escaped, so a name cannot climb to another route."""
    return "/" + "/".join(quote(part, safe="") for part in parts)


class Api:
    """One server's admin API with a session: logs in when needed, maps errors once."""

    def __init__(self, target: Target, config: CtlConfig, user: str | None = None) -> None:
        self.target = target
        self.config = config
        entry = config.entry(target.url)
        self.user = user or os.environ.get(USER_ENV) or entry.user or DEFAULT_USER
        self._token = entry.token if entry.user in (None, self.user) else None
        self._client: httpx.Client | None = None

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = open_client(self.target)
        return self._client

    def get(self, path: str, /, **params: Any) -> Any:
        return _json(self.request("GET", path, params=present(**params)))

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return _json(self.request("POST", path, json=body))

    def delete(self, path: str, /, **params: Any) -> None:
        self.request("DELETE", path, params=present(**params))

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        password = os.environ.get(PASSWORD_ENV)
        cached = self._token
        token = cached or (self.login(password) if password else None)
        response = self._send(method, path, token, **kwargs)
        if response.status_code == 401:
            if token is None:
                raise AuthError(
                    f"not logged in to {self.target.url}: run `roost ctl login` (or set "
                    f"{PASSWORD_ENV}, and {USER_ENV} for a user other than admin)"
                )
            if token == cached and password:  # the saved session expired: log in once more
                response = self._send(method, path, self.login(password), **kwargs)
            elif token == cached:
                raise AuthError(
                    f"the server refused the saved session ({error_detail(response)}): run "
                    f"`roost ctl login` again, or set {PASSWORD_ENV}"
                )
        if response.status_code >= 400:
            raise error_for(response)
        return response

    def login(self, password: str, *, make_current: bool = False) -> str:
        """Log in, and save the token, the server and its verified fingerprint."""
        body = {"username": self.user, "password": password}
        response = self._send("POST", "/login", None, json=body)
        if response.status_code >= 400:
            raise error_for(response)
        answer = _json(response)
        self._token = str(answer["token"])
        entry = ServerEntry(self.target.fingerprint, self.user, self._token, answer["expires_at"])
        self.config.servers[self.target.url] = entry
        if make_current or self.config.current is None:
            self.config.current = self.target.url
        self.config.save()
        return self._token

    def _send(self, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            return self.client.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.target.url, exc) from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise CtlError(
            f"the answer to {response.request.method} {response.request.url.path} is not JSON "
            f"(HTTP {response.status_code}); is {response.request.url.host} a Roost server?"
        ) from None


def present(**values: Any) -> dict[str, Any]:
    """The values given (not None): a request body or query where the server applies its own
    defaults to the options left out."""
    return {name: value for name, value in values.items() if value is not None}
