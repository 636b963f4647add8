"""benchmark/peers/compare.py: the side-by-side check against lightly, at a tiny size on generated data."""

import json
import math
import sys
from pathlib import Path

import pytest

from ssl_bench import protocol
from ssl_bench.errors import UserError
from tests.conftest import TINY, load_script

SCRIPT = Path(__file__).parents[1] / "benchmark" / "peers" / "compare.py"


def test_peer_protocol_keeps_the_images_and_budget():
    compare = load_script(SCRIPT)
    base = protocol.load("tinyimagenet-cpu")
    peer = compare.peer_protocol(base)
    assert peer.dataset == base.dataset and peer.backbone == base.backbone and peer.augment == base.augment
    assert peer.train.batch_size == base.train.batch_size and peer.train.stages == []
    assert peer.stream.n_experiences == 1 and peer.eval.evaluators == ["knn"]
    assert peer.eval.probe_train_per_experience == base.eval.probe_train_per_experience * base.stream.n_experiences


def test_missing_lightly_is_one_line(monkeypatch):
    compare = load_script(SCRIPT)
    monkeypatch.setitem(sys.modules, "lightly", None)  # makes `import lightly` fail
    with pytest.raises(SystemExit) as err:
        compare.require_lightly()
    assert "pip install" in str(err.value.code) and "\n" not in str(err.value.code)


def test_tiny_comparison_on_generated_data(one_thread, tmp_path):
    pytest.importorskip("lightly")
    compare = load_script(SCRIPT)
    base = protocol.parse(TINY.replace('family = "tiny"', 'family = "cpu"'))  # the methods' shipped cpu recipes
    result = compare.compare(base, ["simclr", "byol"], [0], steps=None)
    rows = result["rows"]
    assert [(r["method"], r["library"]) for r in rows] == [
        ("simclr", "random init"),
        ("simclr", "ssl-bench"),
        ("simclr", "lightly"),
        ("byol", "random init"),
        ("byol", "ssl-bench"),
        ("byol", "lightly"),
    ]
    # the default step count is the base protocol's joint run's: 2 experiences of 120 images, batch 32
    assert {r["steps"] for r in rows} == {8}
    for r in rows:
        trained = r["library"] != "random init"
        assert 0 <= r["knn_acc"] <= 1
        assert (r["s_per_step"] is not None and r["s_per_step"] > 0 and math.isfinite(r["final_loss"])) == trained
    assert result["recipes"]["simclr"]["optimizer"] == "lars"
    md = compare.table(result)
    assert "| simclr | random init |" in md and "| simclr | ssl-bench |" in md and "| byol | lightly |" in md
    assert "- simclr: ssl-bench" in md and "- byol: ssl-bench" in md and "random init" in md.splitlines()[-1]
    # the random-init backbone is the one both libraries start from: scored alone, it gives the same row
    alone = compare.compare(base, ["simclr"], [0], steps=None, init_only=True)["rows"]
    assert [r["library"] for r in alone] == ["random init"] and alone[0]["knn_acc"] == rows[0]["knn_acc"]


def _fake(seeds, lightly="1.6.0"):
    rows = [
        dict(method="simclr", library=lib, seed=s, steps=5, knn_acc=acc, train_s=1.0, s_per_step=0.2, final_loss=4.0)
        for s in seeds
        for lib, acc in (("ssl-bench", 0.10 + s / 100), ("lightly", 0.09))
    ]
    return {
        "base_protocol": "tinyimagenet-cpu v1",
        "peer_protocol": {"eval": {"options": {"knn": {"k": 20}}}},
        "peer_protocol_hash": "abc",
        "recipes": {"simclr": {"lr": 0.3}},
        "versions": {"lightly": lightly, "torch": "2.14.1"},
        "device": "cpu",
        "threads": 1,
        "workers": 0,
        "rows": rows,
        "command": f"compare.py --seeds {','.join(map(str, seeds))}",
        "wall_s": 10.0,
    }


def test_merge_puts_seeds_run_apart_in_one_table(tmp_path):
    compare = load_script(SCRIPT)
    for name, seeds in (("a", [0]), ("b", [1, 2])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "peers.json").write_text(json.dumps(_fake(seeds)))
    assert compare.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")]) == 0
    merged = json.loads((tmp_path / "m" / "peers.json").read_text())
    assert sorted({r["seed"] for r in merged["rows"]}) == [0, 1, 2] and merged["wall_s"] == 20.0
    md = (tmp_path / "m" / "peers.md").read_text()
    assert "| simclr | ssl-bench | 11.0 ± 1.0 |" in md and "seeds 0,1,2" in md
    # an --init-only run's random-init rows join the table, without a time per step
    init = _fake([0, 1, 2])
    init["rows"] = [dict(r, library="random init", knn_acc=0.03, s_per_step=None, final_loss=None) for r in init["rows"][::2]]
    (tmp_path / "i").mkdir()
    (tmp_path / "i" / "peers.json").write_text(json.dumps(init))
    assert compare.main(["--merge", *(str(tmp_path / n) for n in "abi"), "--out", str(tmp_path / "m")]) == 0
    md = (tmp_path / "m" / "peers.md").read_text()
    assert "| simclr | random init | 3.0 ± 0.0 | - |" in md and "; random init 3.0." in md


def test_merge_refuses_a_seed_twice_or_other_versions():
    compare = load_script(SCRIPT)
    with pytest.raises(UserError, match="seed 0"):
        compare.merge([_fake([0]), _fake([0, 1])])
    with pytest.raises(UserError, match="versions"):
        compare.merge([_fake([0]), _fake([1], lightly="1.5.0")])
    other_recipe = _fake([1])
    other_recipe["recipes"]["simclr"]["lr"] = 0.6
    with pytest.raises(UserError, match="recipes"):
        compare.merge([_fake([0]), other_recipe])
