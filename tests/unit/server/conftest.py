"""Server fixtures shared with the other server test folder (see tests/helpers)."""

from tests.helpers.server_fixtures import (  # noqa: F401 - pytest finds fixtures by name
    _admin_password,
    postgres_server,
    server,
    shared_server,
)
