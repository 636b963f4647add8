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


def _captured(monkeypatch):
    """The figures plot would write, kept open by name (instead of saved and closed)."""
    figures = {}
    monkeypatch.setattr(plot, "_save", lambda fig, out, name: figures.setdefault(name, fig) and out / name)
    return figures


def _with_loss(path, steps=40, seed=0):
    """A whole result file as fake_result makes it, plus a loss curve."""
    import h5py

    from tests.test_leaderboard import rehash

    with h5py.File(path, "r+") as f:
        f["train/loss"] = (np.linspace(5.0, 4.0, steps) + 0.05 * np.random.default_rng(seed).normal(size=steps)).astype(
            np.float32
        )
    rehash(path)
    return path


def test_seeds_are_one_curve_with_a_band_on_one_y_axis_with_init_chance_and_training_marks(tmp_path, monkeypatch):
    paths = [_with_loss(fake_result(tmp_path / f"s{s}.h5", seed=s), seed=s) for s in (0, 1, 2)]
    paths += [_with_loss(fake_result(tmp_path / f"j{s}.h5", strategy="joint", seed=s), seed=s) for s in (0, 1, 2)]
    runs = [results.Result(p) for p in paths]
    assert [label for label, _ in plot.configurations(runs, plot.labels(runs))] == ["sequential (3 seeds)", "joint (3 seeds)"]
    figures = _captured(monkeypatch)
    written = plot.plot(paths, tmp_path / "fig")
    assert [p.name for p in written] == ["acc_matrix.png", "acc_curves.png", "loss.png", "spectra.png", "cka.png"]

    curves = figures["acc_curves.png"]
    panels = [ax for ax in curves.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["experience 0", "experience 1", "experience 2", "mean over experiences"]
    assert len({ax.get_ylim() for ax in panels}) == 1  # one y-axis for every panel
    assert len(curves.axes) == len(panels)  # no empty slot (T + 1 = 4 panels in one row)
    for ax in panels:
        mean_lines = [line for line in ax.get_lines() if line.get_label() in ("sequential (3 seeds)", "joint (3 seeds)")]
        assert len(mean_lines) == 2 and len(ax.collections) >= 2  # a mean line and a ± sd band per configuration
    seq = np.stack([r.acc_matrix[:, 0] for r in runs[:3]])
    line = next(line for line in panels[0].get_lines() if line.get_label() == "sequential (3 seeds)")
    np.testing.assert_allclose(line.get_ydata()[1:], seq.mean(0))  # after init: the mean over the seeds
    init = np.mean([r["metrics/acc_init"][0] for r in runs])
    dashed = [line for line in panels[0].get_lines() if line.get_linestyle() == "--"]
    assert dashed and np.allclose(dashed[0].get_ydata(), init)  # the random-init line
    legend = curves.legends[0] if curves.legends else next(ax.get_legend() for ax in curves.axes if ax.get_legend())
    assert {"random init", "sequential (3 seeds)", "joint (3 seeds)"} <= {t.get_text() for t in legend.get_texts()}
    # where experience 1 was trained: a bar over the second of the sequential run's three phases
    bars = [p for p in panels[1].patches if p.get_height() < 0.1]
    assert len(bars) == 1 and np.isclose(bars[0].get_x(), 1 / 3) and np.isclose(bars[0].get_width(), 1 / 3)

    loss = figures["loss.png"].axes[0]
    assert {line.get_label() for line in loss.get_lines()} >= {"sequential (3 seeds)", "joint (3 seeds)"}
    assert "train" in loss.get_ylabel() or "loss" in loss.get_ylabel()


def test_a_near_zero_singular_value_does_not_set_the_spectra_scale(tmp_path, monkeypatch):
    import h5py

    from tests.test_leaderboard import rehash

    path = fake_result(tmp_path / "a.h5")
    with h5py.File(path, "r+") as f:
        spectra = f["metrics/collapse/spectrum"][...]
        spectra[:, -1] = 1e-18 * spectra[:, 0]  # one singular value numerically zero
        f["metrics/collapse/spectrum"][...] = spectra
    rehash(path)
    figures = _captured(monkeypatch)
    plot.plot([path], tmp_path / "fig")
    ax = figures["spectra.png"].axes[0]
    top = max(float(np.max(line.get_ydata())) for line in ax.get_lines())
    assert ax.get_ylim()[0] == pytest.approx(top * plot.SPECTRUM_FLOOR)
