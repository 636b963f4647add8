"""Recipes: how a method is optimised. Shipped with the method per protocol family, overridable, hashed.

A protocol fixes what is compared: data, stream, backbone, resolution schedule, training budget
(epochs per experience, batch size), evaluation and seeds. How a method is optimised is the
method's own business, as in every SSL paper: optimiser, base learning rate and its batch-size
scaling rule, weight decay, LARS trust coefficient, clipping and bias/norm exclusion, warm-up, and
the method's own options (temperature, EMA momentum endpoints, ...). That is a :class:`Recipe`.

Where the effective recipe of a run comes from, later entries overriding earlier ones:

1. the :class:`Recipe` field defaults below;
2. the method's ``recipes[protocol.family]`` (a class attribute of the method: ``{family: {key: value}}``),
   or, when the method ships none for the protocol's family, the protocol's ``[recipe]`` table
   (a fallback for methods without recipes, logged as such);
3. ``--recipe FILE.toml`` (recipe keys at the top level, method options in ``[options]``);
4. ``--recipe KEY=VALUE`` (``options.temperature=0.2`` for a method option; ``--method-opt
   temperature=0.2`` is the same).

The effective recipe is stored in the result file (``recipe`` dataset, JSON) and its hash, with the
strategy and stream options, is part of the run's identity (:func:`run_identity`): two runs that
differ in any of them never share a result file.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ssl_bench.errors import UserError, did_you_mean


class Recipe(BaseModel):
    """One method's optimisation recipe (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    optimizer: Literal["sgd", "lars", "adamw"] = "sgd"
    #: base learning rate, at batch size 256 when ``lr_scaling`` is "linear" or "sqrt"
    lr: float = Field(0.1, gt=0)
    #: peak lr = lr * B / 256 ("linear", Goyal et al. 2017), lr * sqrt(B / 256) ("sqrt"), or lr ("none")
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  #: SGD and LARS
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999])  #: AdamW's two betas
    #: LARS trust coefficient: 1e-3 in SimCLR/BYOL's LARS, 0.02 in solo-learn's
    lars_eta: float = Field(0.02, gt=0)
    #: LARS clipping (solo-learn's ``clip_lr``): the adapted lr is min(trust ratio, lr)
    lars_clip: bool = False
    #: biases and normalisation parameters (every parameter with ndim <= 1) get no weight decay and no LARS adaptation
    exclude_bias_norm: bool = True
    #: linear warm-up, in epochs of each phase's data (of the first phase's under schedule_scope = "run")
    warmup_epochs: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    #: the method's own options (keyword arguments of its factory)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("lr", "weight_decay", "lars_eta", "warmup_epochs", "momentum", mode="after")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("betas", mode="after")
    @classmethod
    def _betas(cls, v: list[float]) -> list[float]:
        if len(v) != 2 or not all(0 <= b < 1 for b in v):
            raise ValueError("betas must be two numbers in [0, 1)")
        return v

    def peak_lr(self, batch_size: int) -> float:
        """The learning rate after warm-up for a global batch of ``batch_size``."""
        scale = {"linear": batch_size / 256, "sqrt": math.sqrt(batch_size / 256), "none": 1.0}[self.lr_scaling]
        return self.lr * scale

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


FIELDS = tuple(Recipe.model_fields)


def validate(data: dict[str, Any], where: str) -> Recipe:
    """A :class:`Recipe` from a dict, or a one-line :class:`UserError` naming ``where`` and the key."""
    data = dict(data)
    for key in ("lr", "weight_decay", "lars_eta", "warmup_epochs", "momentum"):
        if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
            data[key] = float(data[key])
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise UserError(
                f"{where}: unknown recipe key '{loc}'."
                + did_you_mean(loc, FIELDS)
                + " Method options go under 'options' (options.temperature=0.2)."
            ) from None
        msg = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{where}: recipe key '{loc}': {msg} (got {first.get('input')!r})") from None


#: Named base recipes that a shipped recipe extends (``{"extends": "solo-lars", "lr": 0.3}``), so each method
#: states only what differs from its base, as protocols do with ``extends`` and lm-eval's tasks with ``include``.
BASES: dict[str, dict[str, Any]] = {
    # solo-learn's LARS for ResNets on small images (scripts/pretrain/cifar/*.yaml): trust coefficient 0.02 with
    # clipping (``clip_lr``), biases and norms excluded (``exclude_bias_n_norm``), SGD momentum 0.9, cosine decay
    "solo-lars": {
        "optimizer": "lars",
        "lars_eta": 0.02,
        "lars_clip": True,
        "exclude_bias_norm": True,
        "momentum": 0.9,
        "schedule": "cosine",
    },
    # solo-learn's CIFAR configs of the zoo (DINO, SwAV, MoCo v3, NNCLR): 10 warm-up epochs of a 1000-epoch run,
    # scaled to 5 for the S3L protocols' shorter schedules
    "solo-lars-s3l": {"extends": "solo-lars", "warmup_epochs": 5.0},
    # a few hundred steps at batch 128: SimCLR's square-root learning-rate rule for small batches and short
    # training (lr = 0.075 sqrt(B), 1.2 at batch 256; Chen et al. 2020, Appendix B.1), one warm-up epoch
    "lars-sqrt": {"extends": "solo-lars", "lr": 1.2, "lr_scaling": "sqrt", "warmup_epochs": 1.0},
    # the smoke protocol's phases are a few steps long: no warm-up
    "lars-sqrt-smoke": {"extends": "lars-sqrt", "warmup_epochs": 0.0},
    # the smoke protocol's own [recipe] fallback: plain SGD at a constant 0.1, for a few steps on generated data
    "sgd-smoke": {"optimizer": "sgd", "lr": 0.1, "lr_scaling": "none", "weight_decay": 5e-4, "schedule": "constant"},
    # solo-learn's CIFAR Barlow Twins and VICReg (scripts/pretrain/cifar/{barlow,vicreg}.yaml): lr 0.3, wd 1e-4
    "solo-lars-cifar": {"extends": "solo-lars", "lr": 0.3, "weight_decay": 1e-4},
    # how each protocol family's phases are trained, for recipes that follow the family's default: the smoke
    # protocol's few steps at a constant rate; warm-up of 0.4 epochs in the CPU protocols' 4-epoch phases (10%);
    # 2 epochs in the S3L protocols' longer ones
    "smoke-phase": {"schedule": "constant"},
    "cpu-phase": {"warmup_epochs": 0.4},
    "s3l-phase": {"warmup_epochs": 2.0},
}


def resolve(data: dict[str, Any], where: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """``data`` on top of the base recipes it ``extends`` (a name of :data:`BASES` or a list of them, merged in
    order, each with its own bases underneath); ``options`` merge key by key. An unknown base or a cycle is a
    one-line :class:`UserError` naming ``where``."""
    names = data.get("extends", [])
    out: dict[str, Any] = {}
    for name in [names] if isinstance(names, str) else list(names):
        if not isinstance(name, str) or name not in BASES:
            raise UserError(f"{where}: 'extends' names an unknown base recipe {name!r}." + did_you_mean(str(name), BASES))
        if name in _seen:
            raise UserError(f"{where}: base recipes extend each other in a cycle ({' -> '.join([*_seen, name])})")
        out = merge(out, resolve(BASES[name], where, (*_seen, name)))
    return merge(out, {k: v for k, v in data.items() if k != "extends"})


def shipped(factory: Any, family: str) -> dict[str, Any] | None:
    """The recipe a method factory ships for a protocol family (its ``recipes`` attribute, ``extends`` resolved),
    or None."""
    recipes = getattr(factory, "recipes", None) or {}
    if not isinstance(recipes, dict):
        raise UserError(f"the method's 'recipes' must be a dict {{family: {{key: value}}}}, got {type(recipes).__name__}")
    found = recipes.get(family)
    return resolve(found, f"recipe '{family}' of {getattr(factory, '__name__', factory)}") if found is not None else None


def read_file(path: str | Path) -> dict[str, Any]:
    """Recipe keys from a TOML file (method options in its ``[options]`` table)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe file '{path}' does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"recipe file '{path}' is not valid TOML: {err}") from None


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s keys on top; ``options`` are merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if key == "options" and isinstance(value, dict):
            out["options"] = {**out.get("options", {}), **value}
        else:
            out[key] = value
    return out


def overrides(items: list[tuple[str, Any]] | list[str | tuple[str, Any]]) -> dict[str, Any]:
    """``--recipe`` arguments (``(key, value)`` pairs or TOML file paths) as one override dict, in order."""
    out: dict[str, Any] = {}
    for item in items:
        if isinstance(item, tuple):
            key, value = item
            if key.startswith("options."):
                out = merge(out, {"options": {key.split(".", 1)[1]: value}})
            else:
                out = merge(out, {key: value})
        else:
            out = merge(out, read_file(item))
    return out


def canonical_hash(data: Any, length: int = 12) -> str:
    """sha256 (first ``length`` hex digits) of the canonical JSON of ``data``."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_identity(
    recipe: Recipe,
    strategy_options: dict[str, Any],
    stream_options: dict[str, Any],
    precision: str | None = None,
    inputs: dict[str, str] | None = None,
) -> str:
    """The hash that, with protocol, method, stream, strategy and seed, names a run: the effective recipe
    (method options included) and the strategy and stream options given on top of the protocol, and the
    precision when the run's is not its protocol's (None otherwise, which leaves every earlier hash as it was), and
    the sha256 of every file an option names (``inputs``, e.g. a manifest; none: earlier hashes stay as they were)."""
    content: dict[str, Any] = {"recipe": recipe.to_json(), "strategy_options": strategy_options, "stream_options": stream_options}
    if precision is not None:
        content["precision"] = precision
    if inputs:  # the content of files read by path (a manifest), when there are any: earlier hashes stay as they were
        content["inputs"] = inputs
    return canonical_hash(content)
