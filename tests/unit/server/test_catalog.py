"""The catalog: migrations match the models, times stay UTC, first start is idempotent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from tests.helpers.server import FakeClock, make_settings

from roost.engine.repository import Repository
from roost.server.app import prepare_state
from roost.server.bootstrap import DEFAULT_ORG
from roost.server.catalog.db import Database
from roost.server.catalog.migrate import upgrade
from roost.server.catalog.models import Base, Organisation
from roost.server.catalog.queries import orgs
from roost.server.orgrepo import PASSPHRASE_PURPOSE
from roost.server.storage_prefix import PrefixedBackend
from roost.storage.memory import MemoryBackend


def test_migrations_create_exactly_the_models(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    upgrade(db)
    upgrade(db)  # a second start changes nothing
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    db.dispose()


def test_times_come_back_as_utc(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    upgrade(db)
    local = datetime(2026, 3, 2, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    with db.session() as session:
        orgs.add(
            session,
            Organisation(
                id="o1",
                name="x",
                created_at=local,
                repo_passphrase_wrapped="",
                recovery_key_wrapped="",
            ),
        )
    with db.read_session() as session:
        org = orgs.get(session, "o1")
        assert org is not None
        assert org.created_at == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
        assert org.created_at.tzinfo == UTC
    db.dispose()


def test_first_start_creates_org_repository_and_admin_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    first = prepare_state(settings, FakeClock())
    assert first.boot.created and first.boot.admin_password is None  # from the environment
    second = prepare_state(settings, FakeClock())
    assert (second.boot.org_id, second.boot.created) == (first.boot.org_id, False)
    with second.db.read_session() as session:
        org = orgs.get_by_name(session, DEFAULT_ORG)
        assert org is not None
        passphrase = second.secrets.unwrap(org.repo_passphrase_wrapped, PASSPHRASE_PURPOSE)
    backend = second.repos.backend(org.id)
    assert backend.prefix == f"orgs/{org.id}/"
    assert Repository.open(backend, passphrase).config.id
    for state in (first, second):
        state.db.dispose()


def test_generated_admin_password_is_returned_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROOST_ADMIN_PASSWORD")
    settings = make_settings(tmp_path / "home")
    state = prepare_state(settings, FakeClock())
    assert state.boot.admin_password is not None and len(state.boot.admin_password) >= 16
    assert prepare_state(settings, FakeClock()).boot.admin_password is None
    state.db.dispose()


def test_prefixed_backend_isolates_organisations() -> None:
    inner = MemoryBackend()
    one, two = PrefixedBackend(inner, "orgs/1/"), PrefixedBackend(inner, "orgs/2/")
    one.put("data/x", b"1")
    two.put("data/x", b"2")
    assert (one.get("data/x"), two.get_range("data/x", 0, 1)) == (b"1", b"2")
    assert [o.key for o in one.list("data/")] == ["data/x"]
    assert one.stat("data/x").key == "data/x"
    assert sorted(o.key for o in inner.list("")) == ["orgs/1/data/x", "orgs/2/data/x"]
    one.delete("data/x")
    assert [o.key for o in two.list("")] == ["data/x"]
    assert one.describe() == "memory:/orgs/1"
