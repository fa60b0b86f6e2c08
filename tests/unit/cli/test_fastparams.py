"""Typer's parameter coercion without Pydantic: same values, same errors, less start-up."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer import _click as click
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param, resolve_type_descriptor
from typer.core import TyperCommand
from typer.models import ArgumentInfo, OptionInfo

from roost.cli import fastparams
from roost.cli.main import run

CASES: list[tuple[Any, Any, Any]] = [
    (str, OptionInfo(), "text"),
    (str, OptionInfo(), "ünïcode \udcff"),
    (str, OptionInfo(), 5),
    (str, OptionInfo(), b"bytes"),
    (float, OptionInfo(min=0.0), 30.0),
    (float, OptionInfo(min=0.0), 0.0),
    (float, OptionInfo(min=0.0), "2.5"),
    (float, OptionInfo(), math.inf),
    (float, OptionInfo(), 3),
    (int, OptionInfo(min=1, max=9), 5),
    (int, OptionInfo(), True),
    (int, OptionInfo(), "7"),
    (list[str], ArgumentInfo(), ("a", "b")),
    (list[str], ArgumentInfo(), ["a"]),
    (list[str], OptionInfo(), ()),
    (list[str], OptionInfo(), ("a", 1)),
    (list[Path], OptionInfo(), ("x",)),
    (Path, OptionInfo(), "some/file"),
]

BAD: list[tuple[Any, Any, Any]] = [
    (float, OptionInfo(min=0.0), -1.0),
    (float, OptionInfo(min=0.0), math.nan),
    (float, OptionInfo(), "abc"),
    (int, OptionInfo(min=1, max=9), 10),
    (int, OptionInfo(), 2.5),
]


class _Param:
    """What coercion asks of a parameter."""

    def __init__(self, multiple: bool = False, nargs: int = 1) -> None:
        self.multiple = multiple
        self.nargs = nargs

    def get_error_hint(self, ctx: object) -> str:
        return "'--x'"


def _param(multiple: bool = False, nargs: int = 1) -> Any:
    return _Param(multiple, nargs)


def _ctx() -> Any:
    return click.Context(TyperCommand("c"))


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    assert fastparams.install()


@pytest.mark.parametrize(("annotation", "info", "value"), CASES)
def test_fast_path_returns_what_typers_adapter_returns(
    annotation: Any, info: Any, value: Any
) -> None:
    descriptor = resolve_type_descriptor(annotation, info)
    real = build_runtime_param(descriptor)  # typer._coercion's own, never patched
    fast = typer.core.build_runtime_param(descriptor)
    param, ctx = _param(), _ctx()
    expected = real.coerce(value, param=param, ctx=ctx)
    got = fast.coerce(value, param=param, ctx=ctx)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("annotation", "info", "value"), BAD)
def test_values_typer_rejects_get_typers_own_error(annotation: Any, info: Any, value: Any) -> None:
    descriptor = resolve_type_descriptor(annotation, info)
    param, ctx = _param(), _ctx()
    with pytest.raises(BadParameter) as real:
        build_runtime_param(descriptor).coerce(value, param=param, ctx=ctx)
    with pytest.raises(BadParameter) as fast:
        typer.core.build_runtime_param(descriptor).coerce(value, param=param, ctx=ctx)
    assert str(fast.value) == str(real.value)


def test_absent_values_and_strings_for_lists_behave_as_in_typer() -> None:
    fast = typer.core.build_runtime_param(resolve_type_descriptor(list[str], OptionInfo()))
    ctx = _ctx()
    assert fast.coerce(None, param=_param(multiple=True), ctx=ctx) == ()
    assert fast.coerce(None, param=_param(), ctx=ctx) is None
    with pytest.raises(BadParameter, match="iterable"):
        fast.coerce("abc", param=_param(multiple=True), ctx=ctx)


def test_other_typer_versions_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(typer, "__version__", "0.0.1")
    assert fastparams.install() is False


def test_usage_errors_are_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["backup", ".", "--checkpoint-seconds", "-1", "--json"])
    assert code == 2
    assert capsys.readouterr().err == (
        "roost: error: Invalid value for '--checkpoint-seconds' (env var: "
        "'ROOST_CHECKPOINT_SECONDS'): Input should be greater than or equal to 0 "
        "(see `roost backup --help`)\n"
    )


def test_a_json_backup_imports_neither_pydantic_nor_rich(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    env = {**os.environ, "ROOST_KDF_PROFILE": "test", "ROOST_PASSWORD": "pw"}
    env["ROOST_REPO"] = str(tmp_path / "repo")
    script = (
        "import sys\n"
        "from roost.cli.main import run\n"
        "assert run(['init', '--json']) == 0\n"
        f"assert run(['backup', {str(tmp_path / 'src')!r}, '--json']) == 0\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'rich'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines()[-1] == "[]"
