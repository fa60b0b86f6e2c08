"""Restores through the control plane: to another agent and directory, exactly (content and
metadata of an awkward tree); and restore parameters that would escape the target are
refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers.api_client import ApiError
from tests.helpers.compare import assert_trees_equal
from tests.helpers.treegen import make_awkward_tree
from tests.integration.workflow.support import Fleet, describe_job, restored, write_files


def test_restore_to_another_agent_and_directory_is_exact(fleet: Fleet, tmp_path: Path) -> None:
    admin = fleet.admin
    name_a, name_b = fleet.name("agent-a"), fleet.name("agent-b")
    fleet.start_agent(name_a)
    fleet.start_agent(name_b)
    source = tmp_path / "awkward"
    make_awkward_tree(source)
    set_name = fleet.name("set")
    admin.create_set(set_name, name_a, [str(source)])
    backup = fleet.run_backup(set_name)
    assert backup["agent"] == name_a

    target = tmp_path / "elsewhere" / "restore-target"
    job = admin.restore(set_name, str(target), agent=name_b)
    assert (job["kind"], job["agent"], job["set"]) == ("restore", name_b, set_name)
    done = fleet.wait_job(job["id"])
    fleet.check(done["state"] == "succeeded", "the restore on agent B", done)
    assert done["snapshot_id"] == backup["snapshot_id"]
    assert done["params"]["restore"]["target"] == str(target)
    assert_trees_equal(source, restored(target, source))
    # Only the source's own path was created under the target.
    assert [p.name for p in target.iterdir()] == [source.parts[1]]


def test_restore_path_escaping_target_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    admin = fleet.admin
    name = fleet.name("agent")
    fleet.start_agent(name)
    source = write_files(tmp_path / "src", {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n"})
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)])
    fleet.run_backup(set_name)
    jobs_before = len(admin.jobs(set=set_name))

    # A relative target: refused by the API (422), no job.
    with pytest.raises(ApiError) as relative:
        admin.restore(set_name, "restore/here")
    assert relative.value.status == 422
    assert relative.value.detail == (
        "body.target: 'restore/here' is not an absolute path (such as /srv/share or D:\\Shares)"
    )
    with pytest.raises(ApiError) as relative_path:
        admin.restore(set_name, str(tmp_path / "t"), paths=["a.txt"])
    assert relative_path.value.status == 422
    assert relative_path.value.detail.startswith("body.paths.0: 'a.txt' is not an absolute path")
    assert len(admin.jobs(set=set_name)) == jobs_before

    # '..' in the target or in a path: the API accepts the request, the agent refuses the
    # job before touching the repository, and the job fails with that message.
    outside = tmp_path / "outside"
    escaping_target = f"{tmp_path}/inside/../outside"
    job = admin.restore(set_name, escaping_target)
    done = fleet.wait_job(job["id"])
    assert done["state"] == "failed", describe_job(done)
    assert done["reason"] == f"restore target {escaping_target!r} must not contain '..'"
    assert not outside.exists() and not (tmp_path / "inside").exists()

    escaping_path = f"{source}/../../../etc/passwd"
    job = admin.restore(set_name, str(tmp_path / "target"), paths=[escaping_path])
    done = fleet.wait_job(job["id"])
    assert done["state"] == "failed", describe_job(done)
    assert done["reason"] == f"restore path {escaping_path!r} must not contain '..'"
    assert not (tmp_path / "target").exists()
