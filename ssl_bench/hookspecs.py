"""Hook specifications: everything a plugin can contribute to ssl-bench or observe.

A plugin is a module (or any object) with functions named after these hooks and decorated
with :data:`ssl_bench.hookimpl`. It implements only the hooks it needs. The factory hooks
return a dict ``{name: factory}``; the names are what users type after ``--method``,
``--stream`` and so on. The types the factories return are documented in :mod:`ssl_bench.api`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from ssl_bench.api import Dataset, Evaluator, Experience, Method, Phase, RunContext, Strategy

hookspec = pluggy.HookspecMarker("ssl_bench")


@hookspec
def ssl_bench_methods() -> dict[str, Callable[..., Method]]:
    """Return ``{name: factory}`` of self-supervised (or supervised) methods.

    ``factory(backbone, **options)`` returns an :class:`ssl_bench.api.Method` that trains
    ``backbone`` (an ``nn.Module`` with a ``feature_dim`` attribute). ``options`` come from
    ``--method-opt key=value`` and should all have defaults from the method's paper.
    """


@hookspec
def ssl_bench_streams() -> dict[str, Callable[..., list[Experience]]]:
    """Return ``{name: factory}`` of streams, which cut a dataset into experiences.

    ``factory(dataset, n_experiences, seed, **options)`` returns a list of
    :class:`ssl_bench.api.Experience`; each carries indices into ``dataset.train`` and
    ``dataset.test``. The same seed must give the same split. ``options`` come from the
    protocol's ``[stream.options.<name>]`` and ``--stream-opt``; what a stream puts in
    ``Experience.info`` is logged and stored in the result file.
    """


@hookspec
def ssl_bench_strategies() -> dict[str, Callable[..., Strategy]]:
    """Return ``{name: factory}`` of continual strategies.

    ``factory(**options)`` returns an :class:`ssl_bench.api.Strategy`. Strategies can be
    combined on the command line with ``+`` (``--strategy replay+mas``).
    """


@hookspec
def ssl_bench_datasets() -> dict[str, Callable[..., Dataset]]:
    """Return ``{name: factory}`` of datasets.

    ``factory(root, resolution, seed, download, **options)`` returns an
    :class:`ssl_bench.api.Dataset` whose images are uint8 tensors at ``resolution``.
    ``root`` is a folder (or None for generated data); a dataset that is missing and
    cannot be downloaded raises :class:`ssl_bench.errors.UserError` saying where to put it.
    Plugins that read image files decode them through :mod:`ssl_bench.blocks.imagecache`.
    """


@hookspec
def ssl_bench_backbones() -> dict[str, Callable[..., nn.Module]]:
    """Return ``{name: factory}`` of backbones (feature extractors).

    ``factory(**options)`` returns an ``nn.Module`` that maps a float image batch
    ``[N, 3, H, W]`` to features ``[N, D]`` and has an integer attribute ``feature_dim == D``.
    """


@hookspec
def ssl_bench_evaluators() -> dict[str, Callable[..., Evaluator]]:
    """Return ``{name: factory}`` of evaluators, which measure the frozen backbone.

    ``factory(**options)`` returns an :class:`ssl_bench.api.Evaluator`.
    """


@hookspec
def ssl_bench_run_start(run: RunContext) -> None:
    """Called once a run is set up, before the first training step.

    ``run`` is the :class:`ssl_bench.api.RunContext` (protocol, dataset, experiences, phases,
    method, device, ...). Observers must not change it.
    """


@hookspec
def ssl_bench_phase_start(run: RunContext, phase: Phase) -> None:
    """Called before a training phase (one experience for sequential training) starts.

    ``phase`` is the :class:`ssl_bench.api.Phase` about to be trained.
    """


@hookspec
def ssl_bench_step_end(run: RunContext, step: int, loss: float) -> None:
    """Called for every optimisation step with the global step number and the loss (a float).

    The losses stay on the device while training, so the calls come at the logging interval: on a GPU
    every ``ssl_bench.engine.loop.LOG_EVERY`` (50) steps and at the end of every phase, once per step since
    the previous call, in order (``run`` is then already further on); on the CPU after every step.
    """


@hookspec
def ssl_bench_phase_end(run: RunContext, phase: Phase, metrics: dict[str, Any]) -> None:
    """Called after a training phase has been trained and evaluated.

    ``metrics`` maps ``"<evaluator>/<key>"`` to what the evaluators measured for this phase.
    """


@hookspec
def ssl_bench_run_end(run: RunContext, path: Path) -> None:
    """Called after the result file has been written to ``path``."""


# ---------------------------------------------------------------- deprecated names (removed in 0.3)
# Until 0.2 the phase hooks were named after experiences, though they receive a Phase. The engine still calls
# them, right after the new ones; implementing one warns when the plugin is registered.


@hookspec(warn_on_impl=DeprecationWarning("ssl_bench_experience_start is deprecated: implement ssl_bench_phase_start"))
def ssl_bench_experience_start(run: RunContext, phase: Phase) -> None:
    """Deprecated name of :func:`ssl_bench_phase_start` (called right after it)."""


@hookspec(warn_on_impl=DeprecationWarning("ssl_bench_experience_end is deprecated: implement ssl_bench_phase_end"))
def ssl_bench_experience_end(run: RunContext, phase: Phase, metrics: dict[str, Any]) -> None:
    """Deprecated name of :func:`ssl_bench_phase_end` (called right after it)."""
