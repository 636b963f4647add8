"""`ssl-bench plot` writes readable PNGs for one and several result files."""

import json

import numpy as np
import pytest

from ssl_bench import cli, results
from ssl_bench import protocol as protocols
from ssl_bench.results import continual
from ssl_bench.results import figures as plot

PNG = b"\x89PNG\r\n\x1a\n"


def fake_result(path, strategy="sequential", seed=0, T=3, evaluators=("collapse", "cka")):
    """A result file with the arrays the plots read (the layout the engine writes)."""
    rng = np.random.default_rng(seed)
    phases = [[0, 1, 2][:T]] if strategy == "joint" else [[i] for i in range(T)]
    P = len(phases)
    arrays = {
        "metrics/acc_matrix": rng.uniform(0.2, 0.9, (P, T)),
        "metrics/acc_init": rng.uniform(0.05, 0.2, T),
        "phases/names": np.array([strategy if strategy == "joint" else f"experience {i}" for i in range(P)], dtype="S"),
        "phases/steps": np.full(P, 10 * T // P),
        "phases/experiences": json.dumps(phases),
    }
    if "collapse" in evaluators:
        spectra = np.sort(rng.exponential(size=(P + 1, 16)), axis=1)[:, ::-1].astype(np.float32)
        arrays["init/collapse/spectrum"], arrays["metrics/collapse/spectrum"] = spectra[0], spectra[1:]
        arrays["init/collapse/auc"], arrays["metrics/collapse/auc"] = np.float64(0.8), rng.uniform(0.6, 0.8, P)
    if "cka" in evaluators:
        base = rng.normal(size=(40, 8))
        feats = np.stack([base + 0.3 * i * rng.normal(size=base.shape) for i in range(P + 1)]).astype(np.float16)
        arrays["init/cka/features"], arrays["metrics/cka/features"] = feats[0], feats[1:]
        arrays["metrics/cka/index"] = np.tile(np.arange(40), (P, 1))
    proto = protocols.load("smoke").model_dump(mode="json")
    made = {"method": "simclr", "stream": "instance", "strategy": strategy, "seed": seed, "plugins": []}
    arrays["protocol_json"] = json.dumps(proto, sort_keys=True)
    arrays["config"] = json.dumps(made | {"protocol": proto, "protocol_hash": protocols.load("smoke").hash})
    attrs = {
        "protocol": "smoke",
        "protocol_version": proto["version"],
        "protocol_hash": protocols.load("smoke").hash,
        **{k: v for k, v in made.items() if k != "plugins"},
        "ssl_bench_version": "0.1.0",
        "torch_version": "test",
        "device": "cpu",
        "plugins": {"simclr": "0.1.0"},
    }
    return results.write(path, attrs, arrays, {"summary": continual.summarize(arrays)})  # a whole file: plot checks it


def check_pngs(paths, expected):
    assert sorted(p.name for p in paths) == sorted(expected)
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000


def test_plot_one_file_through_the_cli(tmp_path, capsys):
    path = fake_result(tmp_path / "seq.h5")
    assert cli.main(["plot", str(path), "--out", str(tmp_path / "fig")]) == 0
    written = [tmp_path / "fig" / line.split("/")[-1] for line in capsys.readouterr().out.split()]
    check_pngs(written, ["acc_matrix.png", "acc_curves.png", "spectra.png", "cka.png"])


def test_plot_several_runs_on_one_figure(tmp_path):
    paths = [
        fake_result(tmp_path / "seq.h5"),
        fake_result(tmp_path / "joint.h5", strategy="joint"),
        fake_result(tmp_path / "seq1.h5", seed=1, evaluators=()),
    ]
    names = plot.labels([results.Result(p) for p in paths])
    assert names == ["sequential / s0", "joint / s0", "sequential / s1"]
    written = plot.plot(paths, tmp_path / "fig")
    check_pngs(written, ["acc_matrix.png", "acc_curves.png", "spectra.png", "cka.png"])


def test_plot_without_collapse_or_cka_writes_the_accuracy_figures(tmp_path, caplog):
    written = plot.plot([fake_result(tmp_path / "a.h5", evaluators=())], tmp_path / "fig")
    check_pngs(written, ["acc_matrix.png", "acc_curves.png"])
    assert "no spectra plot" in caplog.text and "no cka plot" in caplog.text


def test_plot_bad_input_is_a_user_error(tmp_path):
    assert cli.main(["plot", str(tmp_path / "missing.h5"), "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        cli.main(["plot"])
