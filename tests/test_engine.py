"""The engine's own tests: a run resolves every plugin name once (its plan), the plan refuses what cannot run
before any data is loaded, the phase hooks (and their deprecated names) are called, and the loop's arithmetic
(steps, S3L resolutions, schedules, batches) is what ARCHITECTURE.md says."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch

from ssl_bench import hookimpl, protocol
from ssl_bench.api import Phase
from ssl_bench.engine import RunConfig, execute, make_plan
from ssl_bench.engine.build import Run
from ssl_bench.engine.loop import _indices, resolution_at, schedule_of
from ssl_bench.errors import UserError
from ssl_bench.registry import Registry


def config(tiny_protocol, tmp_path, **kw) -> RunConfig:
    chosen = {"method": "simclr", "stream": "instance", "strategy": "sequential", "seed": 0, **kw}
    return RunConfig(protocol=protocol.load(str(tiny_protocol)), out=tmp_path / "runs", progress=False, **chosen)


def test_each_plugin_name_is_resolved_once_per_run(tiny_protocol, tmp_path, monkeypatch, one_thread):
    lookups: Counter = Counter()
    get = Registry.get

    def counting(self, kind, name):
        lookups[(kind, name)] += 1
        return get(self, kind, name)

    monkeypatch.setattr(Registry, "get", counting)
    registry = Registry.discover()
    path = execute(config(tiny_protocol, tmp_path, strategy="replay+mas"), registry)
    assert path is not None and path.exists()
    assert lookups, "the run looked nothing up"
    assert {k: n for k, n in lookups.items() if n != 1} == {}
    assert {("method", "simclr"), ("strategy", "replay"), ("strategy", "mas"), ("stream", "instance")} <= set(lookups)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"strategy": "replay+replay"}, "names replay twice"),
        ({"strategy": "replay+"}, "empty part"),
        ({"method": "simclrr"}, "Did you mean 'simclr'"),
        ({"strategy": "replay", "strategy_options": {"replay.sise": 3}}, "(?i)did you mean 'size'"),
        ({"stream_options": {"path": 3}}, "instance"),
    ],
)
def test_the_plan_refuses_what_cannot_run_before_loading_data(tiny_protocol, tmp_path, monkeypatch, changes, message):
    import ssl_bench.engine.build as build

    monkeypatch.setattr(build, "load_data", lambda plan: pytest.fail("data loaded before the plan was checked"))
    with pytest.raises(UserError, match=message):
        make_plan(config(tiny_protocol, tmp_path, **changes), Registry.discover())


def test_the_plan_holds_merged_options_and_the_recipe(tiny_protocol, tmp_path):
    cfg = config(tiny_protocol, tmp_path, strategy="replay+mas", strategy_options={"replay.size": 64, "mas.lam": 0.5})
    plan = make_plan(cfg, Registry.discover())
    assert [(p.name, p.options) for p in plan.strategies] == [("replay", {"size": 64}), ("mas", {"lam": 0.5})]
    assert cfg.recipe is not None and plan.method.options == cfg.recipe["options"]
    assert [e.name for e in plan.evaluators] == cfg.protocol.eval.evaluators


def observer(calls: list):
    class Observer:
        @hookimpl
        def ssl_bench_phase_start(self, run, phase):
            calls.append(("start", phase.name))

        @hookimpl
        def ssl_bench_phase_end(self, run, phase, metrics):
            calls.append(("end", phase.name))

    return Observer()


def test_phase_hooks_are_called_and_the_old_names_still_work_with_a_warning(tiny_protocol, tmp_path, one_thread):
    calls: list = []
    registry = Registry.discover()
    registry.pm.register(observer(calls))

    class Old:
        @hookimpl
        def ssl_bench_experience_start(self, run, phase):
            calls.append(("old start", phase.name))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.pm.register(Old())
    assert any(issubclass(w.category, DeprecationWarning) and "ssl_bench_phase_start" in str(w.message) for w in caught)
    execute(config(tiny_protocol, tmp_path), registry)
    names = [p for kind, p in calls if kind == "start"]
    assert len(names) == 2  # the tiny protocol's two experiences
    assert [p for kind, p in calls if kind == "old start"] == names
    assert [p for kind, p in calls if kind == "end"] == names


def test_steps_resolutions_schedules_and_batches(tiny_protocol, tmp_path):
    cfg = config(tiny_protocol, tmp_path)
    run = Run(make_plan(cfg, Registry.discover()))
    bs = cfg.protocol.train.batch_size
    assert run.steps_per_experience == [
        -(-len(e.train_idx) * cfg.protocol.train.epochs_per_experience // bs) for e in run.experiences
    ]
    # one phase per experience for sequential training, each its own schedule under schedule_scope = "phase"
    assert [p.experiences for p in run.phases] == [[0], [1]]
    run.phase_index = 1
    start, total, warmup = schedule_of(run, run.phases[1])
    assert (start, total) == (0, run.phases[1].steps) and 0 <= warmup <= total
    # no stages: every step at the dataset's resolution
    assert {resolution_at(run, k, 10) for k in range(10)} == {run.dataset.resolution}
    # batches: without replacement within an epoch, the last partial batch dropped
    run.phase_index = 0
    phase = Phase("p", [0], steps=3)
    pool = torch.arange(2 * bs + 5)
    batches = [device for device, host in _indices(run, phase, pool, torch.device("cpu"))]
    assert [len(b) for b in batches] == [bs, bs, bs]
    assert len(set(torch.cat(batches[:2]).tolist())) == 2 * bs  # one epoch: no index twice
