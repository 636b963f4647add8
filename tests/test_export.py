"""`ssl-bench export`: one row per run and value, loadable by pandas in one line; the leaderboard JSON's per-seed values."""

import json
import sys

import numpy as np
import pytest

from ssl_bench.cli import main
from ssl_bench.results import tables as leaderboard
from tests.test_leaderboard import T, make_result

pd = pytest.importorskip("pandas")


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    for seed in (0, 1):
        for strategy in ("sequential", "joint"):
            make_result(
                tmp_path / "runs",
                "simclr",
                "instance",
                strategy,
                seed,
                rng=rng,
                collapse=rng.uniform(size=1 if strategy == "joint" else T),
            )
    (tmp_path / "runs" / "broken.h5").write_bytes(b"not hdf5")  # skipped with a warning, as by the leaderboard
    return tmp_path / "runs"


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_loads_in_pandas_with_per_phase_values(fmt, folder, tmp_path, capsys):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    path = tmp_path / f"all.{fmt}"
    assert main(["-q", "export", str(folder), "-o", str(path)]) == 0
    df = getattr(pd, f"read_{fmt}")(path)
    assert set(df["seed"]) == {0, 1} and set(df["strategy"]) == {"sequential", "joint"}
    seq0 = df[(df.strategy == "sequential") & (df.seed == 0)]
    matrix = seq0[(seq0.metric == "acc_matrix") & (seq0.when == "phase")].sort_values(["phase", "experience"])
    stored = leaderboard.Result(folder / "smoke-v2__simclr__instance__sequential__s0.h5").acc_matrix
    assert len(matrix) == T * T
    np.testing.assert_allclose(matrix["value"].to_numpy().reshape(T, T), stored)
    collapse = seq0[seq0.metric == "collapse/auc"]
    assert list(collapse["phase"]) == list(range(T)) and collapse["experience"].isna().all()
    final = seq0[(seq0.metric == "final_avg_acc") & (seq0.when == "summary")]["value"]
    assert final.item() == pytest.approx(stored[-1].mean())
    assert set(seq0["when"]) == {"summary", "phase", "init"}
    init = seq0[(seq0.metric == "acc_matrix") & (seq0.when == "init")]["value"]
    np.testing.assert_allclose(
        init, leaderboard.Result(folder / "smoke-v2__simclr__instance__sequential__s0.h5")["metrics/acc_init"]
    )


def test_export_to_stdout_and_parquet_without_pyarrow(folder, tmp_path, monkeypatch, capsys):
    assert main(["-q", "export", str(folder), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {"method", "metric", "when", "phase", "experience", "value"} <= set(rows[0])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["-q", "export", str(folder), "-o", str(tmp_path / "x.parquet")]) == 2
    assert "needs pyarrow" in capsys.readouterr().err


def test_leaderboard_json_keeps_per_seed_values(folder, capsys):
    assert main(["-q", "leaderboard", "--results", str(folder), "--format", "json"]) == 0
    (table,) = json.loads(capsys.readouterr().out)["tables"]
    seq = next(r for r in table["rows"] if r["strategy"] == "sequential")
    finals = seq["per_seed"]["final_avg_acc"]
    assert seq["seeds"] == [0, 1] and len(finals) == 2
    assert np.mean(finals) == pytest.approx(seq["metrics"]["final_avg_acc"]["mean"])
    assert np.mean(seq["per_seed"]["gap_to_joint"]) == pytest.approx(seq["metrics"]["gap_to_joint"]["mean"])
