"""What the user chose for one run: the protocol, the plugins and their options (:class:`RunConfig`).

The effective recipe (:mod:`ssl_bench.recipe`) is resolved once the plugins are known
(:func:`resolve_recipe`): the method's shipped recipe for the protocol's family, or the protocol's
fallback, with the user's ``--recipe`` and ``--method-opt`` on top. It is part of the configuration:
stored in the result file and, through :attr:`RunConfig.identity`, in the name of a run that changes
anything on top of the defaults.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssl_bench import recipe as recipes
from ssl_bench import results
from ssl_bench.errors import UserError
from ssl_bench.protocol import Protocol

if TYPE_CHECKING:  # pragma: no cover
    from ssl_bench.registry import Registry

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
    #: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``bf16`` or ``fp32`` (the loss is always float32)
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

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(protocol=self.protocol.model_dump(mode="json"), protocol_hash=self.protocol.hash, out=str(self.out))
        for how in ("progress", "log", "save_backbone"):  # how the run is watched and kept, not what it is
            del d[how]
        return d

    @property
    def variant(self) -> bool:
        """Whether the run changes anything on top of the defaults: recipe, method, strategy or stream options."""
        return bool(self.recipe_overrides or self.method_options or self.strategy_options or self.stream_options)

    @property
    def identity(self) -> str:
        """Hash of the effective recipe (method options included) and the strategy and stream options."""
        if self.recipe is None:
            raise RuntimeError("the run's recipe is not resolved yet: call ssl_bench.engine.config.resolve_recipe first")
        return recipes.run_identity(recipes.Recipe.model_validate(self.recipe), self.strategy_options, self.stream_options)

    @property
    def result_path(self) -> Path:
        """Same run, same name (so a crashed run resumes); a variant's name carries its :attr:`identity`."""
        variant = self.identity if self.variant else None
        return self.out / results.result_name(self.protocol.label, self.method, self.stream, self.strategy, self.seed, variant)


def resolve_recipe(config: RunConfig, registry: Registry) -> RunConfig:
    """Fill ``config.recipe`` and ``config.recipe_source`` (see the module docstring); returns ``config``."""
    protocol, family = config.protocol, config.protocol.family
    entry = registry.get("method", config.method)
    found = recipes.shipped(entry.factory, family)
    if found is not None:
        source = f"method '{config.method}' (plugin {entry.plugin.name}), family '{family}'"
    elif protocol.recipe:
        found = protocol.recipe
        source = f"protocol {protocol.label} [recipe]: method '{config.method}' ships none for family '{family}'"
    else:
        raise UserError(
            f"method '{config.method}' ships no recipe for protocol family '{family}' and protocol {protocol.label} has no "
            "[recipe] fallback; give one with --recipe FILE.toml (see CONTRIBUTING, Recipes)"
        )
    over = config.recipe_overrides
    if config.method_options:
        over = recipes.merge(over, {"options": config.method_options})
    where = source + (", with --recipe/--method-opt on top" if over else "")
    config.recipe = recipes.validate(recipes.merge(found, over), where).to_json()
    config.recipe_source = source
    return config
