"""The smaller frictions of the contribution path (issue 32, item 7): what show, eval, sweep --dry-run and
--save-backbone tell a contributor."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np

from ssl_bench.cli import main
from tests.test_leaderboard import make_result


def _cka_protocol(tiny_protocol):
    text = tiny_protocol.read_text().replace(
        "probe_train_per_experience = 0", 'probe_train_per_experience = 0\nevaluators = ["linear", "cka"]'
    )
    tiny_protocol.write_text(text + "\n[eval.options.linear]\nl2 = 1e-4\nmax_iter = 50\n")
    return tiny_protocol


def test_saved_weights_have_the_result_files_mode_and_eval_says_nothing_of_cka_to_joint(tiny_protocol, tmp_path, capsys, caplog):
    proto = _cka_protocol(tiny_protocol)
    out = tmp_path / "runs"
    assert main(["-q", "run", "--protocol", str(proto), "--out", str(out), "--save-backbone"]) == 0
    path = Path(capsys.readouterr().out.strip())
    weights = path.with_suffix(".safetensors")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(weights) == mode(path) == 0o666 & ~_umask()  # both as the umask says (safetensors' writer made 0600)

    caplog.set_level(logging.INFO, logger="ssl_bench")
    assert main(["eval", str(weights), "--protocol", str(proto)]) == 0
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "cka/features" not in capsys.readouterr().out  # features are for files, not for reading
    assert "cka" not in said.lower() and "ssl-bench-eval-" not in said  # no note about someone else's joint run


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_show_prints_recipe_plugin_versions_and_loss(tmp_path, capsys):
    path = make_result(tmp_path, "simclr", "instance", "sequential", 0)
    import json

    import h5py

    from tests.test_leaderboard import rehash

    loss = np.linspace(5.0, 4.0, 40)
    with h5py.File(path, "r+") as f:
        f["train/loss"] = loss
        f["phases/steps"] = np.array([10, 10, 10, 10])
        f["recipe"] = json.dumps({"optimizer": "lars", "lr": 0.3, "schedule": "cosine", "options": {"temperature": 0.2}})
        f.attrs["recipe_source"] = "method 'simclr' (plugin simclr), family 'smoke'"
        f.attrs["plugins"] = json.dumps({"simclr": "0.1.0", "instance": "0.2.0", "sequential": "0.1.0", "knn": "0.2.0"})
    rehash(path)
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  recipe     optimizer=lars, lr=0.3, schedule=cosine; options temperature=0.2 (from method 'simclr'" in out
    assert "  plugins    simclr 0.1.0, instance 0.2.0, sequential 0.1.0 (and 1 other plugins loaded)" in out
    tenth = [f"{np.mean(loss[e - 1 : e]):.3f}" for e in (10, 20, 30, 40)]
    assert "  loss       5.000 at the first step, 4.000 at the last (40 steps); at the end of each phase" in out
    assert ", ".join(tenth) in out


def test_sweep_dry_run_estimates_the_time_from_finished_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no leaderboard/results here: only --out's files are timed
    out = tmp_path / "runs"
    make_result(out, "simclr", "instance", "sequential", 0, seconds=120.0)
    make_result(out, "simclr", "instance", "joint", 0, seconds=600.0)
    args = ["-q", "sweep", "--protocol", "smoke", "--methods", "simclr,moco", "--out", str(out), "--dry-run"]
    assert main([*args, "--jobs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == "5 of 6 runs to do (1 have result files)"  # simclr and moco, sequential, seeds 0-2
    # simclr's two seeds: its sequential median (2 min); moco's three: this protocol's median of any run (6 min)
    assert lines[-1].startswith("time: about 22 min of runs for 5 of them") and "about 11 min with 2 at a time" in lines[-1]
    monkeypatch.chdir(Path(__file__).parent)
    assert main([*args, "--out", str(tmp_path / "empty")]) == 0
    assert "time: no estimate" in capsys.readouterr().out.splitlines()[-1]


def test_the_template_ships_recipes():
    import importlib.util

    from ssl_bench import recipe

    path = Path(__file__).resolve().parents[1] / "examples" / "plugin-template" / "src" / "ssl_bench_mymethod" / "plugin.py"
    spec = importlib.util.spec_from_file_location("template_plugin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert {"smoke", "cpu"} <= set(module.MyMethod.recipes)
    for family in module.MyMethod.recipes:
        assert recipe.validate(recipe.shipped(module.MyMethod, family), family).optimizer == "lars"
