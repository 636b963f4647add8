"""``ssl-bench plot``: PNG figures from one or several result files, runs side by side.

Seeds of one configuration (same protocol, method, stream, strategy and variant) are one entry: curves show
their mean with a band of ± one standard deviation over the seeds, heat maps and spectra their mean (the
legend or title says how many seeds).

- ``acc_matrix.png``: the accuracy matrix of each configuration as an annotated heat map (row ``init``
  is the random-init backbone), all panels on one colour scale;
- ``acc_curves.png``: accuracy on each experience through training (x: fraction of the
  run's steps, so joint and sequential runs share one axis), one line per configuration, every panel on one
  y-axis, with the random-init accuracy (dashed), chance (dotted, 1 / the experience's classes) and a bar
  along the bottom where each experience was trained;
- ``loss.png``: the training loss against the fraction of the run's steps (a moving average of 2% of them;
  dotted lines at phase ends), one line per configuration;
- ``spectra.png``: normalised singular-value spectra of the features after every phase
  (the ``collapse`` evaluator), one panel per configuration, with the collapse AUC in the legend; the y-axis
  stops at 1e-4 of the largest value, so one near-zero singular value does not squash the rest;
- ``cka.png``: linear CKA between the backbones after every pair of phases (the ``cka``
  evaluator's stored features), one panel per run, and between the final backbones of the
  runs when several share the same evaluation samples.

A figure whose data no given file has is not written; the command says so. Every file is read through the guarded
read and must pass :func:`ssl_bench.results.check` (whole, unedited, consistent), as ``submit`` requires; a file
that does not is one line naming it and why (``ssl-bench show`` shows what such a file holds).
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ssl_bench.errors import UserError  # noqa: E402
from ssl_bench.results import Result, check, crashing  # noqa: E402
from ssl_bench.results.continual import linear_cka  # noqa: E402

log = logging.getLogger(__name__)
FIELDS = ("protocol", "method", "stream", "strategy", "seed")


def labels(runs: list[Result]) -> list[str]:
    """Short names for runs: the attributes that differ between them (all of them for one run)."""
    differ = [f for f in FIELDS if len({str(r.attrs.get(f)) for r in runs}) > 1] or list(FIELDS[1:])
    fmt = lambda r, f: f"s{r.attrs[f]}" if f == "seed" else str(r.attrs.get(f))  # noqa: E731
    names = [" / ".join(fmt(r, f) for f in differ) for r in runs]
    return [f"{n} ({i})" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _phase_names(r: Result) -> list[str]:
    names = [n.decode(errors="backslashreplace") if isinstance(n, bytes) else str(n) for n in r.get("phases/names", [])]
    names = [n.replace("experience ", "exp ") for n in names]
    return names or [str(i) for i in range(r.acc_matrix.shape[0])]


def _progress(r: Result) -> np.ndarray:
    """x positions of init and of the end of every phase, as fractions of the run's steps."""
    steps = np.asarray(r.get("phases/steps", np.ones(r.acc_matrix.shape[0])), dtype=float)
    return np.concatenate([[0.0], np.cumsum(steps) / steps.sum()])


def _grid(n: int, width: float = 4.2, height: float = 3.6, max_cols: int = 4):
    cols = min(n, max_cols)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(width * cols, 5.0), height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, out: Path, name: str) -> Path:
    path = out / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _heat(ax, m, row_labels, col_labels, vmin, vmax, cmap="viridis", digits=2):
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    tilt = len(col_labels) > 6 or max((len(c) for c in col_labels), default=0) > 8  # long labels would overlap
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45 if tilt else 0, ha="right" if tilt else "center")
    ax.set_yticks(range(len(row_labels)), row_labels)
    if m.size <= 150:
        mid = (vmin + vmax) / 2
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.{digits}f}", ha="center", va="center", fontsize=8, color="white" if v < mid else "black")
    return im


def configurations(runs: list[Result], names: list[str]) -> list[tuple[str, list[Result]]]:
    """The runs grouped by configuration (seeds of the same protocol hash, method, stream, strategy and run
    identity), in the order first seen, each with its label: the run's label without the seed, and the seeds' count."""
    keys = ("protocol_hash", "method", "stream", "strategy", "run_identity")
    groups: dict[tuple, list[Result]] = {}
    for r in runs:
        groups.setdefault(tuple(str(r.attrs.get(k)) for k in keys), []).append(r)
    differ = [f for f in FIELDS[:-1] if len({str(r.attrs.get(f)) for r in runs}) > 1] or list(FIELDS[1:-1])
    out = []
    for members in groups.values():
        label = " / ".join(str(members[0].attrs.get(f)) for f in differ)
        if len(members) > 1:
            label += f" ({len(members)} seeds)"
        else:
            label += f" / s{members[0].attrs.get('seed')}" if "seed" not in label else ""
        out.append((label, members))
    seen = [label for label, _ in out]
    return [(f"{label} ({i})" if seen.count(label) > 1 else label, members) for i, (label, members) in enumerate(out)]


def _mean_of(label: str, members: list[Result]) -> str:
    """A configuration's label for a panel that shows the mean over its seeds."""
    return label.replace(f"({len(members)} seeds)", f"(mean of {len(members)} seeds)")


def _stack(members: list[Result], fn) -> np.ndarray | None:
    """``fn(run)`` for every run of a configuration, stacked, when all have the same shape; else None."""
    values = [np.asarray(fn(r), dtype=float) for r in members]
    return np.stack(values) if values and all(v.shape == values[0].shape for v in values) else None


def accuracy_matrix(runs, names, out: Path) -> Path:
    groups = [
        (label, _stack(members, lambda r: np.vstack([r["metrics/acc_init"], r.acc_matrix])), members)
        for label, members in configurations(runs, names)
    ]
    groups = [(label, m.mean(0), members) for label, m, members in groups if m is not None]
    vmax = max(float(m.max()) for _, m, _ in groups) or 1.0
    fig, axes = _grid(len(groups))
    for ax, (label, m, members) in zip(axes, groups):
        rows = ["init"] + [n[:18] for n in _phase_names(members[0])]
        im = _heat(ax, m, rows, [str(j) for j in range(m.shape[1])], 0.0, vmax, digits=3 if m.size <= 48 else 2)
        ax.set_title(_mean_of(label, members), fontsize=10)
        ax.set_xlabel("evaluated on experience")
        ax.set_ylabel("after phase")
    fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy")
    fig.suptitle("accuracy matrix R[i, j]")
    return _save(fig, out, "acc_matrix.png")


def _chance(r: Result, j: int) -> float | None:
    """1 / the number of classes of experience j (what a probe that guesses scores), when the file says."""
    classes = r.get(f"stream/experience_{j}/classes")
    n = np.size(classes) if classes is not None else 0
    return 1.0 / n if n > 1 else None


def _trained(r: Result) -> list[list[int]]:
    from ssl_bench.results.continual import phase_experiences

    return phase_experiences(r.arrays, r.acc_matrix.shape[0], r.acc_matrix.shape[1])


def _band(ax, x, values, colour, label, **kw):
    """The mean of ``values`` ([seeds, len(x)]) with a band of ± one standard deviation over the seeds."""
    mean = values.mean(0)
    ax.plot(x, mean, color=colour, label=label, **kw)
    if len(values) > 1:
        sd = values.std(0, ddof=1)
        ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.18, linewidth=0)


def accuracy_curves(runs, names, out: Path) -> Path:
    groups = [(label, members) for label, members in configurations(runs, names)]
    T = max(r.acc_matrix.shape[1] for r in runs)
    n = T + 1
    cols = n if n <= 5 else min(4, n)
    rows = -(-n // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows), sharey=True, squeeze=False, layout="constrained")
    axes = list(grid.flat)
    colours = plt.cm.tab10(np.arange(len(groups)) % 10)
    for (label, members), c in zip(groups, colours):
        curves = _stack(members, lambda r: np.vstack([r["metrics/acc_init"], r.acc_matrix]))
        if curves is None:
            log.warning("acc_curves: the seeds of %s have different shapes; drawn from the first seed only", label)
            curves = np.vstack([members[0]["metrics/acc_init"], members[0].acc_matrix])[None]
        x = _progress(members[0])
        plan = _trained(members[0])
        for j in range(curves.shape[2]):
            _band(axes[j], x, curves[:, :, j], c, label, marker="o", ms=3)
            if len(plan) > 1:  # a bar along the bottom where experience j was trained (joint trains all, throughout)
                for i, part in enumerate(plan):
                    if j in part:
                        axes[j].axvspan(x[i], x[i + 1], ymin=0, ymax=0.035, color=c, alpha=0.9, linewidth=0)
        _band(axes[T], x, curves.mean(2), c, label, marker="o", ms=3)
    first = runs[0]
    inits = np.mean([np.asarray(r["metrics/acc_init"], dtype=float) for r in runs if r.acc_matrix.shape[1] == T], axis=0)
    for j, ax in enumerate(axes[:n]):
        level = float(inits.mean()) if j == T else float(inits[j])
        ax.axhline(level, color="0.35", linestyle="--", linewidth=1, label="random init" if j == 0 else None)
        chance = _chance(first, j) if j < T else None
        if chance is not None:
            ax.axhline(chance, color="0.6", linestyle=":", linewidth=1, label="chance" if j == 0 else None)
        ax.set_title("mean over experiences" if j == T else f"experience {j}", fontsize=10)
        ax.set_xlabel("fraction of training")
        ax.grid(alpha=0.3)
    for ax in grid[:, 0]:
        ax.set_ylabel("accuracy")
    handles, legend_labels = axes[0].get_legend_handles_labels()
    spare = axes[n:]
    if spare:  # an empty slot holds the legend
        for ax in spare:
            ax.set_axis_off()
        spare[0].legend(handles, legend_labels, fontsize=8, loc="center")
    else:
        fig.legend(handles, legend_labels, fontsize=8, loc="outside lower center", ncols=min(4, len(handles)))
    fig.suptitle(
        "accuracy on each experience through training (mean ± sd over seeds; bar at the bottom: when it was trained)",
        fontsize=10,
    )
    return _save(fig, out, "acc_curves.png")


def _smooth(loss: np.ndarray, window: int) -> np.ndarray:
    """Moving average (``window`` steps, shorter at the start) of a loss curve."""
    if window <= 1:
        return loss
    cum = np.cumsum(np.insert(loss, 0, 0.0))
    idx = np.arange(1, len(loss) + 1)
    lo = np.maximum(0, idx - window)
    return (cum[idx] - cum[lo]) / (idx - lo)


def loss_curves(runs, names, out: Path) -> Path | None:
    groups = [(label, [r for r in members if "train/loss" in r.arrays]) for label, members in configurations(runs, names)]
    groups = [(label, members) for label, members in groups if members]
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    colours = plt.cm.tab10(np.arange(len(groups)) % 10)
    for (label, members), c in zip(groups, colours):
        curves = _stack(members, lambda r: np.asarray(r["train/loss"], dtype=float).reshape(-1))
        if curves is None:
            curves = np.asarray(members[0]["train/loss"], dtype=float).reshape(1, -1)
        steps = curves.shape[1]
        window = max(1, steps // 50)
        smoothed = np.stack([_smooth(v, window) for v in curves])
        _band(ax, np.arange(1, steps + 1) / steps, smoothed, c, label, linewidth=1.4)
        for end in _progress(members[0])[1:-1]:
            ax.axvline(end, color=c, linestyle=":", linewidth=0.8, alpha=0.6)
    ax.set_xlabel("fraction of training (dotted: phase ends)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("training loss (moving average over 2% of the steps; mean ± sd over seeds)", fontsize=10)
    return _save(fig, out, "loss.png")


#: spectra are drawn down to this fraction of their largest value (a near-zero singular value would set the scale)
SPECTRUM_FLOOR = 1e-4


def spectra(runs, names, out: Path) -> Path | None:
    groups = [
        (label, [r for r in members if "metrics/collapse/spectrum" in r.arrays]) for label, members in configurations(runs, names)
    ]
    groups = [(label, members) for label, members in groups if members]
    if not groups:
        return None
    fig, axes = _grid(len(groups))
    for ax, (label, members) in zip(axes, groups):
        first = members[0]
        rows = ["init"] + _phase_names(first)
        has_init = all("init/collapse/spectrum" in r.arrays for r in members)

        def normalised(r, has_init=has_init):
            specs = ([np.asarray(r["init/collapse/spectrum"], dtype=float)] if has_init else []) + list(
                np.asarray(r["metrics/collapse/spectrum"], dtype=float)
            )
            return np.stack([s / s.sum() for s in specs])

        def aucs(r, has_init=has_init):
            return ([float(r["init/collapse/auc"])] if has_init and "init/collapse/auc" in r.arrays else []) + [
                float(a) for a in np.asarray(r["metrics/collapse/auc"]).reshape(-1)
            ]

        specs = _stack(members, normalised)
        specs = specs.mean(0) if specs is not None else normalised(first)
        auc = _stack(members, aucs)
        auc = auc.mean(0) if auc is not None and auc.size else None
        labels_ = rows if has_init else rows[1:]
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(specs)))
        top = float(specs.max())
        for i, (s, name, c) in enumerate(zip(specs, labels_, colours)):
            k = np.arange(1, len(s) + 1)
            text = f"{name[:16]}" + (f" (AUC {auc[i]:.3f})" if auc is not None and i < len(auc) else "")
            ax.semilogy(k[s > 0], s[s > 0], color=c, label=text)
        ax.set_ylim(bottom=top * SPECTRUM_FLOOR, top=top * 1.5)
        ax.set_title(_mean_of(label, members), fontsize=10)
        ax.set_xlabel("singular value index")
        ax.set_ylabel("s_k / sum(s)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"feature spectra per phase (higher AUC = more collapsed; values under {SPECTRUM_FLOOR:g} of the largest not shown)",
        fontsize=10,
    )
    return _save(fig, out, "spectra.png")


def _cka_features(r: Result):
    """[init?, phase 0, ...] stored CKA features and their labels."""
    feats = list(np.asarray(r["metrics/cka/features"]))
    rows = _phase_names(r)
    if "init/cka/features" in r.arrays:
        feats, rows = [np.asarray(r["init/cka/features"])] + feats, ["init"] + rows
    return feats, rows


def cka(runs, names, out: Path) -> Path | None:
    have = [(r, n) for r, n in zip(runs, names) if "metrics/cka/features" in r.arrays and "metrics/cka/index" in r.arrays]
    if not have:
        return None
    groups = {}  # runs whose final features are of the same samples can be compared
    for r, n in have:
        groups.setdefault(np.asarray(r["metrics/cka/index"])[-1].tobytes(), []).append((r, n))
    cross = max(groups.values(), key=len)
    panels = len(have) + (len(cross) > 1)
    fig, axes = _grid(panels)
    for ax, (r, name) in zip(axes, have):
        feats, rows = _cka_features(r)
        m = np.array([[linear_cka(a, b) for b in feats] for a in feats])
        im = _heat(ax, m, [x[:14] for x in rows], [x[:10] for x in rows], 0.0, 1.0, cmap="magma")
        ax.set_title(name, fontsize=10)
    if len(cross) > 1:
        finals = [np.asarray(r["metrics/cka/features"])[-1] for r, _ in cross]
        m = np.array([[linear_cka(a, b) for b in finals] for a in finals])
        short = [n[:22] for _, n in cross]
        _heat(axes[-1], m, short, short, 0.0, 1.0, cmap="magma")
        axes[-1].set_title("final backbones, between runs", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8, label="linear CKA")
    fig.suptitle("linear CKA between backbones")
    return _save(fig, out, "cka.png")


def plot(paths: list[str | Path], out: str | Path) -> list[Path]:
    """Write the figures for the result files ``paths`` into ``out``; return the files written."""
    if not paths:
        raise UserError("plot: give at least one result file")
    crashed = crashing(paths)  # one child process reads them all first: a file that crashes HDF5 is refused here
    runs = []
    for p in paths:
        if Path(p) in crashed:
            raise UserError(crashed[Path(p)])
        runs.append(Result(p))
        check(runs[-1])  # a damaged or edited file is refused, as by submit and the leaderboard (show shows it)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create --out '{out}': {err.strerror or err}") from None
    names = labels(runs)
    written = [accuracy_matrix(runs, names, out), accuracy_curves(runs, names, out)]
    for fn, what in (
        (loss_curves, "a loss curve (train/loss)"),
        (spectra, "metrics of the 'collapse' evaluator"),
        (cka, "metrics of the 'cka' evaluator"),
    ):
        path = fn(runs, names, out)
        if path is None:
            log.warning("no %s plot: no file has %s", fn.__name__, what)
        else:
            written.append(path)
    return written
