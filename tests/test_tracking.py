"""--log tensorboard[=DIR] and --log wandb: loss, learning rate and per-phase metrics of a real (tiny) run."""

import logging
import sys
import types
from pathlib import Path

import pytest

from ssl_bench import results
from ssl_bench.cli import main
from ssl_bench.engine import build


class FakeWandbRun:
    def __init__(self, **kwargs):
        self.init, self.logged, self.finished = kwargs, [], False

    def log(self, values, step):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in for the wandb package (the real one needs an account or a network to be useful)."""
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        module.runs.append(FakeWandbRun(**kwargs))
        return module.runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_tensorboard_and_wandb_log_loss_lr_and_phase_metrics(tiny_protocol, tmp_path, fake_wandb, capsys, caplog):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    caplog.set_level(logging.INFO, logger="ssl_bench")
    out, board = tmp_path / "runs", tmp_path / "tb"
    args = ["run", "--protocol", str(tiny_protocol), "--out", str(out), "--log", f"tensorboard={board}", "--log", "wandb"]
    assert main(args) == 0
    result = results.Result(capsys.readouterr().out.strip())
    steps = int(result.attrs["steps"])

    (folder,) = board.iterdir()
    assert folder.name == Path(result.path).stem  # one folder per run, named after its result file
    said = [r.getMessage() for r in caplog.records if r.name == "ssl_bench.engine.tracking"]
    assert said == [f"tensorboard: logging to {folder} (tensorboard --logdir {board})", f"tensorboard: wrote {folder}"]
    events = EventAccumulator(str(folder))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "linear/acc/mean", "linear/acc/exp0", "linear/acc/exp1"} <= set(tags)
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, steps + 1))
    assert [e.value for e in loss] == pytest.approx(list(result["train/loss"]), rel=1e-5)
    assert all(e.value == pytest.approx(0.05) for e in events.Scalars("train/lr"))  # the tiny recipe: constant 0.05
    acc = events.Scalars("linear/acc/exp1")  # the random-init evaluation at step 0, then one value per phase
    assert [e.step for e in acc][0] == 0 and len(acc) == 3
    expected = [result["metrics/acc_init"][1], *result.acc_matrix[:, 1]]
    assert [e.value for e in acc] == pytest.approx(expected, abs=1e-6)

    (run,) = fake_wandb.runs
    assert run.init["name"] == Path(result.path).stem and run.init["config"]["method"] == "simclr" and run.finished
    logged = [values for _, values in run.logged]
    assert sum("train/loss" in v for v in logged) == steps
    assert [v["linear/acc/mean"] for v in logged if "linear/acc/mean" in v] == pytest.approx(
        [result["metrics/acc_init"].mean(), *result.acc_matrix.mean(axis=1)], abs=1e-6
    )


def test_missing_tracker_library_fails_before_data_loads(tiny_protocol, tmp_path, monkeypatch, capsys):
    def load_data(*args, **kwargs):
        raise AssertionError("data was loaded")

    monkeypatch.setattr(build, "load_data", load_data)
    monkeypatch.setitem(sys.modules, "wandb", None)  # "not installed"
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    base = ["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path)]
    for tracker, expect in [("wandb", "needs the wandb package"), ("tensorboard", "needs the tensorboard package")]:
        assert main([*base, "--log", tracker]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("ssl-bench: error: --log") and expect in line and "pip install" in line
    assert main([*base, "--log", "tensorbord"]) == 2
    assert "Did you mean 'tensorboard'" in capsys.readouterr().err
