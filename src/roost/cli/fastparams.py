"""Typer's parameter coercion without Pydantic for the values that need none.

Typer 0.29 coerces every parameter value through a Pydantic ``TypeAdapter``, built on first
use: importing Pydantic and building the adapters of one command took 50-90 ms of every
``roost`` run, more than the rest of the argument parsing. Nearly all values are already of
the declared type (a ``str`` for a ``str`` option, a tuple of ``str`` for a ``list[str]``
argument, a default ``float`` inside its range) or absent (``None``), and then the adapter
only returns them unchanged.

``install()`` makes Typer's parameters coerce such values directly, with exactly the result
the adapter gives, and hand everything else (strings to convert to numbers or paths, values
out of range, choices, custom parsers) to Typer's own adapter, built on first need, so every
conversion and every error message stays Typer's. It checks the Typer version it was written
for and does nothing with any other one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

TYPER_VERSION = "0.29.1"
_MISS = object()


def install() -> bool:
    """Patch Typer's runtime parameter factory; return whether it was patched."""
    import typer
    import typer.core

    if typer.__version__ != TYPER_VERSION or not hasattr(typer.core, "build_runtime_param"):
        return False
    if getattr(typer.core.build_runtime_param, "_roost_fast", False):
        return True
    original = typer.core.build_runtime_param
    from typer._coercion import RuntimeParam

    @dataclass(frozen=True)
    class FastRuntimeParam(RuntimeParam):
        descriptor: Any = None
        _built: list[Any] = field(default_factory=list)

        def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
            multi = param.multiple or param.nargs == -1
            if value is None:  # as RuntimeParam.coerce: no adapter needed
                return () if multi else None
            if not (multi and isinstance(value, str)):  # that one is Typer's error
                plain = fast_value(self.annotation, self.parameter_info, value)
                if plain is not _MISS:
                    return plain
            return self._real().coerce(value, param=param, ctx=ctx)

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            return self._real()._coerce_value(value, param=param, ctx=ctx)

        def _real(self) -> Any:
            if not self._built:
                self._built.append(original(self.descriptor))
            return self._built[0]

    def build(descriptor: Any) -> Any:
        return FastRuntimeParam(
            parameter_info=descriptor.parameter_info,
            annotation=descriptor.annotation,
            descriptor=descriptor,
        )

    build._roost_fast = True  # type: ignore[attr-defined]
    typer.core.build_runtime_param = build
    return True


def fast_value(annotation: Any, info: Any, value: Any) -> Any:
    """``value`` as Typer's adapter would return it, or ``_MISS`` when the adapter must decide."""
    if getattr(info, "parser", None) is not None or getattr(info, "click_type", None) is not None:
        return _MISS
    kind = type(value)
    if annotation is str:
        return value if kind is str else _MISS
    if annotation is float or annotation is int:
        if kind is not annotation or getattr(info, "clamp", False):
            return _MISS
        low, high = getattr(info, "min", None), getattr(info, "max", None)
        if (low is not None and not low <= value) or (high is not None and not value <= high):
            return _MISS  # out of range (or NaN): the adapter words the error
        return value
    if get_origin(annotation) is not list or get_args(annotation) != (str,):
        return _MISS
    if (kind is tuple or kind is list) and all(type(item) is str for item in value):
        return list(value)
    return _MISS
