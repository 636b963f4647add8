"""``ssl-bench plot``: PNG figures from one or several result files, runs side by side.

- ``acc_matrix.png``: the accuracy matrix of each run as an annotated heat map (row ``init``
  is the random-init backbone);
- ``acc_curves.png``: accuracy on each experience through training (x: fraction of the
  run's steps, so joint and sequential runs share one axis), one line per run;
- ``spectra.png``: normalised singular-value spectra of the features after every phase
  (the ``collapse`` evaluator), one panel per run, with the collapse AUC in the legend;
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
    ax.set_xticks(
        range(len(col_labels)),
        col_labels,
        rotation=45 if len(col_labels) > 6 else 0,
        ha="right" if len(col_labels) > 6 else "center",
    )
    ax.set_yticks(range(len(row_labels)), row_labels)
    if m.size <= 150:
        mid = (vmin + vmax) / 2
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.{digits}f}", ha="center", va="center", fontsize=8, color="white" if v < mid else "black")
    return im


def accuracy_matrix(runs, names, out: Path) -> Path:
    mats = [np.vstack([r["metrics/acc_init"], r.acc_matrix]) for r in runs]
    vmax = max(float(m.max()) for m in mats) or 1.0
    fig, axes = _grid(len(runs))
    for ax, r, m, name in zip(axes, runs, mats, names):
        rows = ["init"] + [n[:18] for n in _phase_names(r)]
        im = _heat(ax, m, rows, [str(j) for j in range(m.shape[1])], 0.0, vmax, digits=3 if m.size <= 48 else 2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("evaluated on experience")
        ax.set_ylabel("after phase")
    fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy")
    fig.suptitle("accuracy matrix R[i, j]")
    return _save(fig, out, "acc_matrix.png")


def accuracy_curves(runs, names, out: Path) -> Path:
    T = max(r.acc_matrix.shape[1] for r in runs)
    fig, axes = _grid(T + 1, width=3.8, height=3.0)
    colours = plt.cm.tab10(np.arange(len(runs)) % 10)
    for r, name, c in zip(runs, names, colours):
        m = np.vstack([r["metrics/acc_init"], r.acc_matrix])
        x = _progress(r)
        for j in range(m.shape[1]):
            axes[j].plot(x, m[:, j], "o-", color=c, label=name, ms=3)
        axes[-1].plot(x, m.mean(1), "o-", color=c, label=name, ms=3)
    for j, ax in enumerate(axes):
        ax.set_title("mean over experiences" if j == T else f"experience {j}", fontsize=10)
        ax.set_xlabel("fraction of training")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    return _save(fig, out, "acc_curves.png")


def spectra(runs, names, out: Path) -> Path | None:
    have = [(r, n) for r, n in zip(runs, names) if "metrics/collapse/spectrum" in r.arrays]
    if not have:
        return None
    fig, axes = _grid(len(have))
    for ax, (r, name) in zip(axes, have):
        specs = [r.get("init/collapse/spectrum")] + list(np.asarray(r["metrics/collapse/spectrum"]))
        aucs = [r.get("init/collapse/auc")] + list(np.asarray(r["metrics/collapse/auc"]))
        rows = ["init"] + _phase_names(r)
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(specs)))
        for s, a, label, c in zip(specs, aucs, rows, colours):
            if s is None:
                continue
            s = np.asarray(s, dtype=float)
            s = s / s.sum()
            k = np.arange(1, len(s) + 1)
            ax.semilogy(k[s > 0], s[s > 0], color=c, label=f"{label[:16]} (AUC {float(a):.3f})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("singular value index")
        ax.set_ylabel("s_k / sum(s)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("feature spectra per phase\n(higher AUC = more collapsed)", fontsize=10)
    return _save(fig, out, "spectra.png")


def _cka_features(r: Result):
    """[init?, phase 0, ...] stored CKA features and their labels."""
    feats = list(np.asarray(r["metrics/cka/features"]))
    rows = _phase_names(r)
    if "init/cka/features" in r.arrays:
        feats, rows = [np.asarray(r["init/cka/features"])] + feats, ["init"] + rows
    return feats, rows


def cka(runs, names, out: Path) -> Path | None:
    have = [(r, n) for r, n in zip(runs, names) if "metrics/cka/features" in r.arrays]
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
    for fn, evaluator in ((spectra, "collapse"), (cka, "cka")):
        path = fn(runs, names, out)
        if path is None:
            log.warning("no %s plot: no file has metrics of the '%s' evaluator", fn.__name__, evaluator)
        else:
            written.append(path)
    return written
