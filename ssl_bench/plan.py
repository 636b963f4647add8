"""What one run is: the user's choices (:class:`RunConfig`) and the plugins they name, resolved once (:class:`Plan`).

:class:`RunConfig` is what the user chose: the protocol, the method, stream and strategy names, their
options, the seed and where results go. :func:`make_plan` turns it into a :class:`Plan` by asking the
registry for every plugin name exactly once: the method (and, from it, the effective recipe:
:func:`resolve_recipe`), the parts of ``a+b`` strategies, the stream, the dataset, the backbone and the
evaluators, each with its merged options checked against its factory's signature
(:func:`ssl_bench.options.check`) before any data is loaded. Everything after that (loading the data,
building the run, the checkpoint's fingerprint, the result's name) reads the plan, never the registry.

The effective recipe (:mod:`ssl_bench.recipe`) is the method's shipped recipe for the protocol's family,
or the protocol's fallback, with the user's ``--recipe`` and ``--method-opt`` on top. It is part of the
configuration: stored in the result file and, through :attr:`RunConfig.identity`, in the name of a run
that changes anything on top of the defaults.

One run, one identity. :func:`make_plan` drops every option given (``--recipe``, ``--method-opt``,
``--strategy-opt``, ``--stream-opt``) that equals what the run would have without it, and holds each number in
its default's type (:func:`canonical`): ``--recipe lr=0.1`` where the method's recipe has lr 0.1 is the default
run, and ``temperature=1`` and ``temperature=1.0`` are one run. A file that an option names (a manifest's
``path``) is part of the run by its content: its sha256 is in :attr:`RunConfig.inputs`, so in the checkpoint's
fingerprint and in the identity, and a run never resumes, nor takes the name of, a run of other content.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssl_bench import recipe as recipes
from ssl_bench.errors import UserError, did_you_mean
from ssl_bench.names import result_name
from ssl_bench.options import EMPTY, check, options_of
from ssl_bench.protocol import Protocol

if TYPE_CHECKING:  # pragma: no cover
    from ssl_bench.registry import Entry, Registry

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """What the user chose: the protocol plus the plugins and options of one run."""

    protocol: Protocol
    method: str
    stream: str
    strategy: str  #: one name or several joined by "+"
    seed: int
    out: Path
    method_options: dict[str, Any] = field(default_factory=dict)
    strategy_options: dict[str, Any] = field(default_factory=dict)  #: "name.key" or "key" -> value
    stream_options: dict[str, Any] = field(default_factory=dict)  #: over the protocol's [stream.options.<name>]
    data_root: str | None = None
    download: bool = False
    device: str = "auto"
    #: ``auto`` (the protocol's ``train.precision``; under its ``auto``, bf16 autocast on CUDA and fp32 elsewhere),
    #: ``bf16`` or ``fp32`` (:func:`precisions`; the loss is always float32)
    precision: str = "auto"
    #: torch.compile the method's step (forward and loss; backward through AOTAutograd)
    compile: bool = False
    plugins: list[str] = field(default_factory=list)
    progress: bool = True
    #: ``--recipe`` given by the user (KEY=VALUE pairs and files, merged in order by :func:`ssl_bench.recipe.overrides`)
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    #: the effective recipe (set by :func:`resolve_recipe`), JSON-ready
    recipe: dict[str, Any] | None = None
    #: where the recipe came from (the method's shipped one for the family, or the protocol's fallback)
    recipe_source: str = ""
    #: trackers that observe the run (``--log tensorboard[=DIR]``, ``--log wandb``; :mod:`ssl_bench.engine.tracking`)
    log: list[str] = field(default_factory=list)
    #: write the final backbone's weights next to the result (``--save-backbone``; :mod:`ssl_bench.engine.weights`)
    save_backbone: bool = False
    #: sha256 of every file the run reads by path (an option naming a file: a manifest's ``stream.path``), by option;
    #: set by :func:`make_plan`, part of the checkpoint's fingerprint and of the run's :attr:`identity`
    inputs: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(protocol=self.protocol.model_dump(mode="json"), protocol_hash=self.protocol.hash, out=str(self.out))
        for how in ("progress", "log", "save_backbone"):  # how the run is watched and kept, not what it is
            del d[how]
        return d

    @property
    def variant(self) -> bool:
        """Whether the run changes anything on top of the defaults: recipe, method, strategy or stream options."""
        return bool(
            self.recipe_overrides or self.method_options or self.strategy_options or self.stream_options or self.precision_tag
        )

    @property
    def precision_tag(self) -> str | None:
        """The run's precision when ``--precision`` made it other than its protocol's on its device, else None.

        Such a run is a variant: its identity hash covers the precision and its file name ends in ``__bf16`` or
        ``__fp32`` (after its ``__v<identity>``), so a bf16 run on the CPU never takes the fp32 run's name."""
        effective, default = precisions(self.precision, self.protocol.train.precision, self.device)
        return effective if effective != default else None

    @property
    def identity(self) -> str:
        """Hash of the effective recipe (method options included), the strategy and stream options, and the precision
        when it is not the protocol's (:attr:`precision_tag`)."""
        if self.recipe is None:
            raise RuntimeError("the run's recipe is not resolved yet: build its plan first (ssl_bench.plan.make_plan)")
        recipe = recipes.Recipe.model_validate(self.recipe)
        return recipes.run_identity(recipe, self.strategy_options, self.stream_options, self.precision_tag, self.inputs)

    @property
    def result_path(self) -> Path:
        """Same run, same name (so a crashed run resumes); a variant's name carries its :attr:`identity` (and its
        :attr:`precision_tag`)."""
        variant = self.identity if self.variant else None
        p = self.protocol
        return self.out / result_name(p.label, self.method, self.stream, self.strategy, self.seed, variant, self.precision_tag)


#: the precisions a run may ask for (``--precision``) and a protocol may fix (``train.precision``)
PRECISIONS = ("auto", "bf16", "fp32")


def precisions(requested: str, protocol: str, device: str) -> tuple[str, str]:
    """``(effective, default)`` precision of a run: ``default`` is the protocol's ``train.precision`` on the
    run's device (``auto``: bf16 on CUDA, fp32 elsewhere); ``effective`` is ``requested`` unless it is ``auto``,
    then the default. ``device`` as the user gave it (``auto``: CUDA when torch sees a GPU)."""
    if requested not in PRECISIONS:
        raise UserError(f"--precision {requested}: use bf16, fp32 or auto")
    if protocol == "auto":
        cuda = device.startswith("cuda") or (device == "auto" and _cuda_available())
        protocol = "bf16" if cuda else "fp32"
    return (protocol if requested == "auto" else requested), protocol


def _cuda_available() -> bool:
    import torch  # here: tools that only read configurations start without torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class Planned:
    """One plugin of a run: its registry entry and the options it is built with (merged and checked)."""

    entry: Entry
    options: dict[str, Any]

    @property
    def name(self) -> str:
        return self.entry.name

    def build(self, *args: Any, **engine_args: Any) -> Any:
        """Call the factory with the engine's arguments and the options; a ``TypeError`` about its arguments
        becomes a one-line error naming the plugin."""
        try:
            return self.entry.factory(*args, **engine_args, **self.options)
        except TypeError as err:
            if "argument" in str(err):
                raise UserError(f"{self.entry.kind} '{self.entry.name}' (plugin {self.entry.plugin.name}): {err}") from None
            raise


@dataclass(frozen=True)
class Plan:
    """A run's configuration with every plugin resolved once (:func:`make_plan`)."""

    config: RunConfig
    registry: Registry
    method: Planned  #: options: the effective recipe's method options
    strategies: list[Planned]  #: the parts of ``a+b``, each with its own options
    stream: Planned  #: options: the protocol's ``[stream.options.<name>]`` with ``--stream-opt`` on top
    dataset: Planned
    backbone: Planned
    evaluators: list[Planned]

    @property
    def protocol(self) -> Protocol:
        return self.config.protocol


def strategy_parts(spec: str, values: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``--strategy-opt`` split between the parts of ``a+b`` ("name.key" to one part, "key" to a lone strategy)."""
    names = [s for s in spec.split("+")]
    if not all(names):
        raise UserError(f"--strategy '{spec}' has an empty part; give names such as 'sequential' or 'replay+mas'")
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"--strategy '{spec}' names {', '.join(twice)} twice; give each strategy once")
    parts = []
    for name in names:
        own = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(name + ".")}
        if len(names) == 1:
            own.update({k: v for k, v in values.items() if "." not in k})
        parts.append((name, own))
    for key in values:
        prefix = key.split(".", 1)[0]
        if "." in key and prefix not in names:
            raise UserError(f"--strategy-opt {key}: no strategy '{prefix}' in '{spec}'." + did_you_mean(prefix, names))
        if "." not in key and len(names) > 1:
            raise UserError(
                f"--strategy-opt {key}: with several strategies ('{spec}'), prefix the option with its strategy's name, "
                f"e.g. {names[-1]}.{key}"
            )
    return parts


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same(a: Any, b: Any) -> bool:
    """Equal as configuration values: numbers by value (``1`` is ``1.0``; ``True`` is not ``1``), lists and tables
    item by item, anything else by type and equality."""
    if _number(a) and _number(b):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def canonical(given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``given`` options without those equal to their default (:func:`same`), each number in its default's type
    (a float option given ``1`` holds ``1.0``; an integer option given ``4096.0`` holds ``4096``), so that one run has
    one identity however its options were spelled."""
    out = {}
    for key, value in given.items():
        default = defaults.get(key, EMPTY)
        if default is not EMPTY and same(value, default):
            continue
        if _number(value) and isinstance(default, float) and not isinstance(default, bool):
            value = float(value)
        elif _number(value) and _number(default) and isinstance(default, int) and float(value).is_integer():
            value = int(value)
        out[key] = value
    return out


def _defaults(entry: Entry) -> dict[str, Any]:
    """The defaults of a plugin factory's options (those it has; none when its signature cannot be read)."""
    found = options_of(entry)
    return {} if found is None else {k: o.default for k, o in found.options.items() if o.default is not EMPTY}


def canonical_overrides(config: RunConfig, found: dict[str, Any], factory: dict[str, Any]) -> None:
    """``--recipe`` and ``--method-opt`` without what equals what the run would have without them (the method's
    recipe ``found``, the :class:`~ssl_bench.recipe.Recipe` field defaults, the factory's option defaults), numbers
    in their defaults' types (:func:`canonical`): ``--recipe lr=0.1`` where the recipe's lr is 0.1 is the default run,
    not a variant of it."""
    fields = {k: f.get_default(call_default_factory=True) for k, f in recipes.Recipe.model_fields.items()}
    base = {**fields, **found}
    over = dict(config.recipe_overrides)
    options = dict(over.pop("options", None) or {})
    for key in config.method_options:  # --method-opt wins over --recipe options.KEY
        options.pop(key, None)
    kept = canonical(over, base)
    base_options = {**factory, **(base.get("options") or {})}
    options = canonical(options, base_options)
    if options:
        kept["options"] = options
    config.recipe_overrides = kept
    config.method_options = canonical(config.method_options, {**base_options, **options})


def inputs(options: dict[str, dict[str, Any]]) -> dict[str, str]:
    """sha256 of the content of every file an option names (a string that is the path of a file), keyed
    ``kind.option``: a run that reads a file by path is a run of that file's content, not of its name."""
    found = {}
    for kind, values in options.items():
        for key, value in values.items():
            path = Path(value).expanduser() if isinstance(value, str) and value else None
            if path is not None and path.is_file():
                digest = hashlib.sha256()
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
                found[f"{kind}.{key}"] = digest.hexdigest()
    return found


def resolve_recipe(config: RunConfig, method: Entry) -> RunConfig:
    """Fill ``config.recipe`` and ``config.recipe_source`` from the method's entry (see the module docstring)."""
    protocol, family = config.protocol, config.protocol.family
    found = recipes.shipped(method.factory, family)
    if found is not None:
        source = f"method '{config.method}' (plugin {method.plugin.name}), family '{family}'"
    elif protocol.recipe:
        found = protocol.recipe
        source = f"protocol {protocol.label} [recipe]: method '{config.method}' ships none for family '{family}'"
    else:
        raise UserError(
            f"method '{config.method}' ships no recipe for protocol family '{family}' and protocol {protocol.label} has no "
            "[recipe] fallback; give one with --recipe FILE.toml (see CONTRIBUTING, Recipes)"
        )
    canonical_overrides(config, found, _defaults(method))
    over = config.recipe_overrides
    if config.method_options:
        over = recipes.merge(over, {"options": config.method_options})
    where = source + (", with --recipe/--method-opt on top" if over else "")
    config.recipe = recipes.validate(recipes.merge(found, over), where).to_json()
    config.recipe_source = source
    return config


def make_plan(config: RunConfig, registry: Registry) -> Plan:
    """Resolve every plugin of ``config`` once, fill its recipe, and check every option (before any data is loaded)."""
    protocol = config.protocol
    get = registry.get
    method = get("method", config.method)
    resolve_recipe(config, method)
    assert config.recipe is not None
    method_options = dict(config.recipe.get("options", {}))
    check(method, method_options, "--method-opt, --recipe or the method's recipe")
    strategies = []
    parts = strategy_parts(config.strategy, config.strategy_options)
    given: dict[str, Any] = {}  # the strategy options, each equal to its default dropped (one spelling per option)
    for name, own in parts:
        entry = get("strategy", name)
        own = canonical(own, _defaults(entry))
        given.update({(f"{name}.{k}" if len(parts) > 1 else k): v for k, v in own.items()})
        strategies.append(Planned(entry, own))
        check(strategies[-1].entry, own, "--strategy-opt")
    config.strategy_options = given
    stream_entry = get("stream", config.stream)
    protocol_stream = protocol.stream.options.get(config.stream, {})
    config.stream_options = canonical(config.stream_options, {**_defaults(stream_entry), **protocol_stream})
    stream_options = {**protocol_stream, **config.stream_options}
    stream = Planned(stream_entry, stream_options)
    check(stream.entry, stream_options, f"protocol [stream.options.{config.stream}] or --stream-opt")
    dataset = Planned(get("dataset", protocol.dataset.name), dict(protocol.dataset.options))
    check(dataset.entry, dataset.options, "protocol [dataset] options")
    backbone = Planned(get("backbone", protocol.backbone.name), dict(protocol.backbone.options))
    check(backbone.entry, backbone.options, "protocol [backbone] options")
    evaluators = []
    for name in protocol.eval.evaluators:
        evaluators.append(Planned(get("evaluator", name), dict(protocol.eval.options.get(name, {}))))
        check(evaluators[-1].entry, evaluators[-1].options, f"protocol [eval.options.{name}]")
    if protocol.eval.primary not in protocol.eval.evaluators:
        raise UserError(f"protocol eval.primary '{protocol.eval.primary}' is not among eval.evaluators")
    config.inputs = inputs({"method": method_options, "strategy": config.strategy_options, "stream": stream_options})
    return Plan(config, registry, Planned(method, method_options), strategies, stream, dataset, backbone, evaluators)
