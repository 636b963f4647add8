"""benchmark/peers/compare.py: the side-by-side check against lightly, at a tiny size on generated data."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from ssl_bench import protocol
from tests.conftest import TINY

SCRIPT = Path(__file__).parents[1] / "benchmark" / "peers" / "compare.py"


def load_script():
    spec = importlib.util.spec_from_file_location("peers_compare", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peer_protocol_keeps_the_images_and_budget():
    compare = load_script()
    base = protocol.load("tinyimagenet-cpu")
    peer = compare.peer_protocol(base)
    assert peer.dataset == base.dataset and peer.backbone == base.backbone and peer.augment == base.augment
    assert peer.train.batch_size == base.train.batch_size and peer.train.stages == []
    assert peer.stream.n_experiences == 1 and peer.eval.evaluators == ["knn"]
    assert peer.eval.probe_train_per_experience == base.eval.probe_train_per_experience * base.stream.n_experiences


def test_missing_lightly_is_one_line(monkeypatch):
    compare = load_script()
    monkeypatch.setitem(sys.modules, "lightly", None)  # makes `import lightly` fail
    with pytest.raises(SystemExit) as err:
        compare.require_lightly()
    assert "pip install" in str(err.value.code) and "\n" not in str(err.value.code)


def test_tiny_comparison_on_generated_data(one_thread, tmp_path):
    pytest.importorskip("lightly")
    compare = load_script()
    base = protocol.parse(TINY.replace('family = "tiny"', 'family = "cpu"'))  # the methods' shipped cpu recipes
    result = compare.compare(base, ["simclr", "byol"], [0], steps=None)
    rows = result["rows"]
    assert [(r["method"], r["library"]) for r in rows] == [
        ("simclr", "ssl-bench"),
        ("simclr", "lightly"),
        ("byol", "ssl-bench"),
        ("byol", "lightly"),
    ]
    # the default step count is the base protocol's joint run's: 2 experiences of 120 images, batch 32
    assert {r["steps"] for r in rows} == {8}
    for r in rows:
        assert 0 <= r["knn_acc"] <= 1 and r["s_per_step"] > 0 and math.isfinite(r["final_loss"])
    assert result["recipes"]["simclr"]["optimizer"] == "lars"
    md = compare.table(result)
    assert "| simclr | ssl-bench |" in md and "| byol | lightly |" in md
    assert "- simclr: ssl-bench" in md and "- byol: ssl-bench" in md
