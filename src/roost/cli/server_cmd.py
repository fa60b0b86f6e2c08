"""`roost server`: run the control plane (thin: see roost.server.main).

Registered by the main app with ``server_cmd.register(app)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from roost.server.config import ServerSettings
from roost.server.main import run_server


def server(
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Server home: key, TLS, catalog, storage (./roost-data)."),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Catalog URL: sqlite:///PATH or postgresql+psycopg://..."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="Storage: a directory or s3://BUCKET/PREFIX?endpoint=..."),
    ] = None,
    bind: Annotated[
        str | None, typer.Option("--bind", help="HOST:PORT to listen on (127.0.0.1:8443).")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
    insecure_http: Annotated[
        bool, typer.Option("--insecure-http", help="Plain HTTP; loopback --bind only.")
    ] = False,
) -> None:
    """Run the Roost control-plane server (options override ROOST_* environment variables)."""
    given: dict[str, Any] = {
        "home": home,
        "db_url": db,
        "storage_url": storage,
        "bind": bind,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
    }
    overrides = {name: value for name, value in given.items() if value is not None}
    if insecure_http:
        overrides["insecure_http"] = True
    run_server(ServerSettings(**overrides), echo=typer.echo)


def register(app: typer.Typer) -> None:
    app.command("server")(server)
