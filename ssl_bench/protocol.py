"""Protocols: versioned TOML files that fix everything a comparison must hold constant.

A protocol names the dataset, resolution, backbone, augmentations, training budget,
optimiser, evaluation and seeds. It is validated strictly (unknown keys and wrong types
are errors) and hashed over its canonical content, so results made under different
protocols are never compared.

Versions. A shipped protocol's file ``protocols/<name>.toml`` is its current version; when a protocol gets a
new version, the old file moves, unchanged but for an ``extends`` that names a kept version, to
``protocols/versions/<name>@<version>.toml``. ``load("tinyimagenet-cpu@1")`` (and ``extends =
"tinyimagenet-cpu@1"``) reads a kept version; :func:`shipped` lists the current names only and
:func:`shipped_versions` every kept ``name@version``. :func:`load_shipped` (name, version) is what
``ssl-bench submit`` checks a result file against, so result files made under a kept version stay valid on
the leaderboard, under their own hash, next to the new version's.

Keys added after protocols were first hashed are in :data:`HASHED_WHEN_SET`: left at their default they are
left out of the hash, so every protocol written before them (and every result file made under it) keeps its
hash. Top-level keys that tie protocols together (read by ``ssl-bench report``, :mod:`ssl_bench.results.claims`):

- ``domain_protocol`` (a shipped protocol's name): the protocol whose ``domain``-stream runs the claims take as
  this protocol's domain-incremental stream (tinyimagenet-cpu v2: ``"pacs-cpu"``, PACS's natural domains); unset,
  the claims look for a transform-domain twin (tinyimagenet-cpu-domains).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ssl_bench.errors import UserError, did_you_mean

#: keys that describe a protocol but do not change its results, so they are not hashed. ``recipe`` is the
#: fallback for methods that ship no recipe for the protocol's family: the effective recipe is part of each
#: run's own identity (:func:`ssl_bench.recipe.run_identity`), not of what the protocol compares.
UNHASHED = ("description", "defaults", "recipe", "ranked")

#: keys added after the first protocols were hashed, with the default at which they are left out of the hash
#: (a path of keys -> default): a protocol that does not set them keeps the hash it had before they existed
HASHED_WHEN_SET: dict[tuple[str, ...], Any] = {
    ("domain_protocol",): None,
    ("train", "warmup_scale"): None,
    ("train", "precision"): "auto",
    ("eval", "precision"): "fp32",
    ("eval", "channels_last"): False,
}

#: image sides a protocol may ask for (1 px trained on nothing; 100,000 px failed in the allocator)
MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024
#: epochs per experience a protocol may ask for (1e9 started a run that would never end; inf failed deep inside)
MAX_EPOCHS = 10_000
#: a seed is a 32-bit unsigned integer (what numpy and torch take)
Seed = Annotated[int, Field(ge=0, lt=2**32)]

#: folder (inside ``protocols/``) of the kept older versions of shipped protocols, ``<name>@<version>.toml``
VERSIONS = "versions"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DatasetSpec(_Strict):
    name: str
    resolution: int = Field(ge=MIN_RESOLUTION, le=MAX_RESOLUTION, description="side of the square images, in pixels")
    seed: int = Field(0, description="seed of generated data (fixed, so all runs see the same images)")
    root: str | None = Field(None, description="default data folder; --data-root overrides it")
    options: dict[str, Any] = Field(default_factory=dict)


class StreamSpec(_Strict):
    n_experiences: int = Field(ge=1)
    #: per-stream options, keyed by stream name: {"class": {...}}
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class BackboneSpec(_Strict):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class AugmentSpec(_Strict):
    recipe: str = Field("simclr", description="named set of views, see ssl_bench.blocks.augment.RECIPES")
    options: dict[str, Any] = Field(default_factory=dict)


class Stage(_Strict):
    """One stage of the S3L resolution schedule: train at ``resolution`` for ``fraction`` of the steps."""

    resolution: int = Field(ge=MIN_RESOLUTION, le=MAX_RESOLUTION)
    fraction: float = Field(gt=0, le=1)


class TrainSpec(_Strict):
    """The training budget. How a method is optimised is its recipe (:mod:`ssl_bench.recipe`), not the protocol's."""

    epochs_per_experience: float = Field(gt=0, le=MAX_EPOCHS)
    batch_size: int = Field(gt=1)
    #: "phase": warm-up, learning-rate decay and EMA-momentum schedules restart with every training phase,
    #: as CaSSLe's code trains each experience like a run of its own (this project's choice: Hu et al., which
    #: predates CaSSLe, does not say whether its schedules restart per chunk of the stream); "run": one
    #: schedule over all steps of the run. Joint training has one phase, so both give it one schedule.
    schedule_scope: Literal["phase", "run"] = "phase"
    #: S3L: e.g. [{resolution = 16, fraction = 0.8}, {resolution = 32, fraction = 0.2}] within every phase
    stages: list[Stage] = Field(default_factory=list)
    #: multiplies every method's recipe ``warmup_epochs``, an epoch then counted exactly (images / batch size;
    #: unset: the recipe's epochs of full batches, as before this key). Recipes give their warm-up in epochs for
    #: the CPU protocols' 4-epoch phases (0.4 epochs: 10% of a phase); a protocol of E epochs per phase that
    #: sets ``warmup_scale = E / 4`` keeps every method's warm-up at the same *share* of its steps
    #: (tinyimagenet-cpu-full v2: 1.3 / 4; pacs-cpu: 15 / 4), which a fixed number of epochs would not.
    warmup_scale: float | None = Field(None, gt=0)
    #: the training step's arithmetic for every run of the protocol: "bf16" (autocast; the loss and the stored
    #: loss curve stay float32), "fp32", or "auto" (the default: bf16 on CUDA, fp32 on other devices). A run's
    #: ``--precision`` other than this (on its device) is a variant of its own name (:mod:`ssl_bench.plan`).
    precision: Literal["auto", "bf16", "fp32"] = "auto"

    @model_validator(mode="after")
    def _stages_sum_to_one(self) -> TrainSpec:
        if self.stages and abs(sum(s.fraction for s in self.stages) - 1) > 1e-6:
            raise ValueError("train.stages fractions must add up to 1")
        return self


class EvalSpec(_Strict):
    evaluators: list[str] = Field(default_factory=lambda: ["linear"])
    #: evaluator whose per-experience "acc" becomes metrics/acc_matrix
    primary: str = "linear"
    #: labelled samples per experience that the probes are trained on (0 = all)
    probe_train_per_experience: int = Field(1000, ge=0)
    batch_size: int = Field(256, gt=0)
    #: how the frozen features are computed (:func:`ssl_bench.engine.evaluation.features`): "fp32" (the default),
    #: or "bf16" (bf16 autocast, channels_last inputs: 4-5x faster on CPUs with AVX512-BF16/AMX)
    precision: Literal["fp32", "bf16"] = "fp32"
    #: whether float32 features take channels_last inputs (NHWC: 1.5-1.7x faster on the CPU, rounding apart the same
    #: features); bf16 features always do
    channels_last: bool = False
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Defaults(_Strict):
    method: str = "simclr"
    stream: str = "instance"
    strategy: str = "sequential"


class Protocol(_Strict):
    name: str
    version: int = Field(ge=1)
    #: which of a method's shipped recipes applies (``Method.recipes[family]``): "smoke", "cpu", "s3l", ...
    family: str
    description: str = ""
    dataset: DatasetSpec
    stream: StreamSpec
    backbone: BackboneSpec
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    train: TrainSpec
    eval: EvalSpec = Field(default_factory=EvalSpec)
    seeds: list[Seed] = Field(min_length=1)
    defaults: Defaults = Field(default_factory=Defaults)
    #: the recipe of methods that ship none for ``family`` (validated by :func:`ssl_bench.recipe.validate`)
    recipe: dict[str, Any] = Field(default_factory=dict)
    #: whether the leaderboard ranks methods under this protocol (``false``: smoke, forgetting: checks that a
    #: method works, whose tables have no rank column); not hashed, it changes no result
    ranked: bool = True
    #: the shipped protocol whose ``domain``-stream runs stand for this protocol's domain-incremental stream
    #: in the claims (see the module docstring); None: a transform-domain twin, if one exists
    domain_protocol: str | None = None

    @model_validator(mode="after")
    def _recipe_is_valid(self) -> Protocol:
        if self.recipe:
            from ssl_bench.recipe import validate

            validate(self.recipe, "[recipe]")
        return self

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON of everything that changes results."""
        content = self.model_dump(mode="json", exclude=set(UNHASHED))
        for path, default in HASHED_WHEN_SET.items():
            *parents, last = path
            table = content
            for key in parents:
                table = table[key]
            if table.get(last, default) == default:
                table.pop(last, None)
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.name}-v{self.version}"


def shipped() -> list[str]:
    """Names of the protocols that ship inside the package (their current versions)."""
    folder = resources.files("ssl_bench") / "protocols"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def shipped_versions() -> list[str]:
    """The kept older versions of shipped protocols, as ``name@version`` (``protocols/versions/``)."""
    folder = resources.files("ssl_bench") / "protocols" / VERSIONS
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml") and "@" in p.name)


def load_shipped(name: str, version: int) -> Protocol | None:
    """Version ``version`` of the shipped protocol ``name`` (current or kept), or None when it does not ship."""
    if name in shipped():
        current = load(name)
        if current.version == version:
            return current
    if f"{name}@{version}" in shipped_versions():
        return load(f"{name}@{version}")
    return None


def _known() -> list[str]:
    return shipped() + shipped_versions()


def _shipped_text(name: str) -> str:
    folder = resources.files("ssl_bench") / "protocols"
    return (folder / VERSIONS / f"{name}.toml" if "@" in name else folder / f"{name}.toml").read_text()


def load(name_or_path: str) -> Protocol:
    """Load a shipped protocol by name (``name@version`` for a kept older version), or a protocol file by path."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise UserError(f"protocol file '{name_or_path}' does not exist")
        text, where = path.read_text(), str(path)
    else:
        if name_or_path not in _known():
            raise UserError(
                f"unknown protocol '{name_or_path}'."
                + did_you_mean(name_or_path, _known())
                + " Give a shipped name (name@version for an older version) or a path to a .toml file."
            )
        text = _shipped_text(name_or_path)
        where = f"protocol '{name_or_path}'"
    proto = parse(text, where)
    if "@" in name_or_path and f"{proto.name}@{proto.version}" != name_or_path:
        raise UserError(f"{where}: the file holds {proto.name} v{proto.version}, not what its name says")
    return proto


def parse(text: str, where: str = "protocol") -> Protocol:
    data = _resolve(_toml(text, where), where, ())
    try:
        return Protocol.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{where}: {_explain(err)}") from None
    except UserError as err:  # the [recipe] table, checked by ssl_bench.recipe
        raise UserError(f"{where}: {err}") from None


def _toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{where} is not valid TOML: {err}") from None


def _resolve(data: dict[str, Any], where: str, seen: tuple[str, ...]) -> dict[str, Any]:
    """Apply ``extends = "NAME"``: the shipped protocol NAME's tables, with this file's keys merged over them.

    Tables merge key by key; any other value (a list, a number) replaces the base's. What is hashed is the
    resolved protocol, so a file that extends another is the same protocol as the same content written out.
    """
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str) or base_name not in _known():
        raise UserError(
            f"{where}: 'extends' must name a shipped protocol ({', '.join(shipped())}; name@version for a kept "
            f"older version), got {base_name!r}" + (did_you_mean(base_name, _known()) if isinstance(base_name, str) else "")
        )
    if base_name in seen:
        raise UserError(f"{where}: protocols extend each other in a circle: {' -> '.join(seen + (base_name,))}")
    base = _resolve(_toml(_shipped_text(base_name), f"protocol '{base_name}'"), f"protocol '{base_name}'", seen + (base_name,))
    return _merge(base, data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        both_tables = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merge(base[key], value) if both_tables else value
    return out


def _explain(err: ValidationError) -> str:
    """One line for the first problem: which key, what is wrong, what is allowed."""
    first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        from ssl_bench.recipe import FIELDS

        if first["loc"][0] == "train" and first["loc"][-1] in FIELDS:
            return (
                f"'{loc}' is part of a method's recipe, not of the protocol's budget (since protocol format 2): "
                f"move it to the protocol's [recipe] table (the fallback for methods without one) or to the method's "
                f"recipes; warmup_steps became warmup_epochs"
            )
        model: Any = Protocol
        for part in first["loc"][:-1]:
            is_model = isinstance(model, type) and issubclass(model, BaseModel)
            field = model.model_fields.get(str(part)) if is_model else None
            model = field.annotation if field is not None else None
        known = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
        return f"unknown key '{loc}'." + did_you_mean(str(first["loc"][-1]), known)
    if first["type"] == "missing":
        return f"missing key '{loc}'"
    got = first.get("input")
    return f"'{loc}': {first['msg']} (got {got!r})"
