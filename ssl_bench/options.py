"""Plugin options: what a factory takes, read from its signature, and the user's options checked against it.

A plugin's options are the keyword arguments of its factory, minus those the engine passes
itself (a method's backbone; a stream's ``dataset``, ``n_experiences`` and ``seed``; a dataset's
``root``, ``resolution``, ``seed`` and ``download``). Each option's type is its annotation
(``temperature: float = 0.5``), else the type of its default when that is a bool, int, float or
str; an option with neither is not type-checked. A float option takes integers (``lam=1``), not booleans.


:func:`options_of` lists them (``ssl-bench list --options NAME``); :func:`ssl_bench.plan.make_plan` checks every
option of a run (the method's recipe options, the strategy's, the stream's, and the protocol's
dataset, backbone and evaluator options) before any data is loaded: an unknown name gets "did
you mean", a wrong type says what was expected, both as one :class:`~ssl_bench.errors.UserError`.
Values are checked by pydantic in strict mode, so ``Literal[...]``, ``list[int]`` or
``Annotated[float, annotated_types.Gt(0)]`` annotations are enforced too.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from ssl_bench.errors import UserError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from ssl_bench.registry import Entry

#: arguments the engine passes to a factory of each kind (they are not options)
ENGINE_ARGS = {
    "stream": ("dataset", "n_experiences", "seed"),
    "dataset": ("root", "resolution", "seed", "download"),
}
EMPTY = inspect.Parameter.empty


@dataclass
class Option:
    """One keyword argument of a plugin factory."""

    name: str
    type: Any  #: the annotation, the default's type, or EMPTY (not checked)
    default: Any  #: EMPTY when required

    @property
    def type_name(self) -> str:
        if self.type is EMPTY:
            return "any"
        if isinstance(self.type, type):
            return self.type.__name__
        return str(self.type).replace("typing.", "")


@dataclass
class Options:
    """The options of one factory; ``open`` when it also takes ``**kwargs`` (unknown names cannot be refused)."""

    options: dict[str, Option]
    open: bool


def options_of(entry: Entry) -> Options | None:
    """The options of a registered factory, or None when its signature cannot be read."""
    factory = entry.factory
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    try:
        target = factory.__init__ if inspect.isclass(factory) else factory
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: types are not checked
        hints = {}
    if entry.kind == "method" and params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        params = params[1:]  # the backbone
    skip = ENGINE_ARGS.get(entry.kind, ())
    found, open_ = {}, False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            open_ = True
        elif p.kind is not p.VAR_POSITIONAL and p.name not in skip:
            kind = hints.get(p.name, EMPTY)
            if kind is EMPTY and type(p.default) in (bool, int, float, str):
                kind = type(p.default)
            found[p.name] = Option(p.name, kind, p.default)
    return Options(found, open_)


def _accepts(kind: Any, value: Any) -> bool:
    if kind is EMPTY:
        return True
    try:
        TypeAdapter(kind).validate_python(value, strict=True)
    except ValidationError:
        return False
    except Exception:  # noqa: BLE001 - a type pydantic cannot check is not checked
        return True
    return True


def check(entry: Entry, values: dict[str, Any], where: str) -> None:
    """Refuse, in one line, an option ``entry``'s factory does not take or a value of the wrong type."""
    found = options_of(entry)
    if found is None:
        return
    label = f"{entry.kind} '{entry.name}'"
    for key, value in values.items():
        option = found.options.get(key)
        if option is None:
            if found.open:
                continue
            hint = did_you_mean(key, found.options) if found.options else " It takes no options."
            raise UserError(f"{label} has no option '{key}' ({where}).{hint} Its options: ssl-bench list --options {entry.name}")
        if not _accepts(option.type, value):
            if isinstance(value, str):
                raise UserError(
                    f"{label}: option '{key}' must be {option.type_name}, got {value!r} ({where}); "
                    f"values are read as TOML: 0.5, 3, true, [1, 2], or a quoted string"
                )
            got = f"{value!r} ({type(value).__name__})"
            raise UserError(f"{label}: option '{key}' must be {option.type_name}, got {got} ({where})")
