"""Transfer of the final backbone to downstream datasets: a linear probe and few-shot episodes, at the end of a run.

The protocol lists the datasets; each is loaded through the registry's dataset plugins at
the protocol's resolution when the run starts (so a missing dataset stops the run before
training, with a message saying where it was looked for and how to point elsewhere)::

    [eval.options.downstream]
    l2 = "select"                      # or a fixed L2 strength (default 1e-4)
    fewshot = { n_way = 7, shots = [5], n_query = 15, episodes = 600 }
    datasets = [{ name = "cifar10", root = "data/cifar10" },
                { label = "pacs_photo", name = "multidomain", root = "pacs-64", options = { domains = ["photo"] } },
                { label = "pacs", name = "multidomain", root = "pacs-64", tasks = ["fewshot"] }]

Where a dataset is: an absolute ``root`` as given; a relative one is looked up in
``$SSL_BENCH_DOWNSTREAM_ROOT`` when that is set, else next to the pre-training data, in the parent folder
of ``--data-root`` (or of the protocol's ``dataset.root``), else in the working directory. So with
``--data-root /data/tiny-imagenet-100``, ``root = "pacs-64"`` is ``/data/pacs-64``. A dataset without
``root`` is given none (plugins that generate or download their data).

Tasks (``tasks``, default ``["linear"]``):

- ``linear``: the frozen backbone embeds (up to ``max_train``) training and (up to ``max_test``) test
  images, seeded subsets; a linear probe (L-BFGS logistic regression, :func:`ssl_bench.blocks.probes.fit_predict`,
  as in ``linear``) is fitted on the first and scored on the second: ``<label>/acc``. Its L2 strength is
  ``l2``, or with ``l2 = "select"`` chosen as the ``linear`` evaluator chooses it (Kornblith et al. 2019):
  from ``l2_grid`` by accuracy on a seeded ``val_fraction`` of the probe's own training split
  (:func:`ssl_bench.blocks.probes.select_l2`), then refitted on the whole split; stored as ``<label>/l2``.
  ``select_by`` and ``solver`` are ``linear``'s options of the same names (since 0.3.0; their defaults,
  accuracy and the float64 L-BFGS, are 0.2.0's numbers).

Under a protocol whose ``eval.precision`` is ``"bf16"`` (since 0.3.0) the images are embedded as the engine
embeds the pre-training data's (:func:`ssl_bench.blocks.probes.embed`: bf16 autocast, channels_last,
``inference_mode``); otherwise in float32 as 0.2.0 did, so the float32 protocols' numbers stay.
- ``fewshot``: N-way K-shot episodes (``fewshot`` options, those of the ``fewshot`` evaluator: ``n_way``,
  ``shots``, ``n_query``, ``episodes``, ``classifier``; :func:`ssl_bench.blocks.probes.episodes`)
  drawn from all the dataset's images (both splits: a downstream set is never trained on), seeded, the
  same in every run; one set of episodes per domain of the dataset (a one-domain dataset: one set):
  ``<label>/acc_<k>shot_<domain>`` and ``<label>/ci95_<k>shot_<domain>`` (1.96 x standard error over
  episodes), and ``<label>/acc_<k>shot``, the mean over the domains. With ``n_way`` equal to the number
  of classes every episode uses all of them. The classifier is the nearest prototype (Snell et al.
  2017) by default, this project's choice; ``classifier = "logreg"`` fits a probe per episode.

Hu et al. (ICLR 2022) judge pre-training by such transfer (linear probes on 11 datasets, few-shot, detection);
the CPU protocols (tinyimagenet-cpu v2) measure PACS (photo linear probe, 5-shot on its four domains).
"""

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ssl_bench import hookimpl
from ssl_bench.api import Evaluator
from ssl_bench.blocks import augment
from ssl_bench.blocks.probes import check_options, embed, episodes, fit_predict, prototype_predict, select_l2
from ssl_bench.errors import UserError

__version__ = "0.3.0"
__license__ = "Apache-2.0"
__paper__ = "Kornblith et al., Do Better ImageNet Models Transfer Better?, CVPR 2019"

_KEYS = {"name", "root", "options", "label", "tasks"}
_TASKS = ("linear", "fewshot")
_FEWSHOT = {"n_way": 5, "shots": [5], "n_query": 15, "episodes": 600, "classifier": "prototype"}
#: environment variable: the folder that relative downstream roots are looked up in
ROOT_ENV = "SSL_BENCH_DOWNSTREAM_ROOT"


def resolve_root(root, data_root) -> tuple[Path | None, str]:
    """Where a dataset's ``root`` is, and how it was found (for the error when it is missing)."""
    if root is None:
        return None, ""
    path = Path(str(root)).expanduser()
    if path.is_absolute():
        return path, "as given"
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser() / path, f"in ${ROOT_ENV}"
    if data_root:
        parent = Path(str(data_root)).expanduser().absolute().parent  # as given: a symlink's own folder
        return parent / path, f"next to the pre-training data (the parent of {data_root})"
    return Path.cwd() / path, "in the working directory (no --data-root)"


class Downstream(Evaluator):
    name = "downstream"
    when = "end"

    def __init__(
        self,
        datasets=(),
        max_train: int = 10000,
        max_test: int = 10000,
        l2: float | str = 1e-4,
        l2_grid: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
        val_fraction: float = 0.2,
        max_iter: int = 200,
        batch_size: int = 256,
        seed: int = 0,
        fewshot: dict | None = None,
        solver: str = "lbfgs64",
        select_by: str = "accuracy",
    ):
        if not datasets:
            raise UserError("downstream: give eval.options.downstream.datasets, a list of {name, root, options}")
        self.specs = []
        for spec in datasets:
            if not isinstance(spec, dict) or "name" not in spec or set(spec) - _KEYS:
                raise UserError(
                    f"downstream: each dataset must be a table with 'name' and optionally 'root', 'label', "
                    f"'options', 'tasks'; got {spec!r}"
                )
            tasks = spec.get("tasks", ["linear"])
            if not isinstance(tasks, list) or not tasks or any(t not in _TASKS for t in tasks):
                raise UserError(f"downstream: 'tasks' must list some of {', '.join(_TASKS)}; got {tasks!r}")
            self.specs.append(dict(spec, tasks=tasks))
        labels = [s.get("label", s["name"]) for s in self.specs]
        if len(set(labels)) != len(labels):
            raise UserError(f"downstream: datasets listed twice under one label ({labels}); give each a distinct 'label'")
        if not (l2 == "select" or (isinstance(l2, (int, float)) and not isinstance(l2, bool) and l2 >= 0)):
            raise UserError(f'downstream: l2 must be a non-negative number or "select", got {l2!r}')
        if l2 == "select" and (not l2_grid or any(v < 0 for v in l2_grid) or not 0 < val_fraction < 1):
            raise UserError('downstream: l2 = "select" needs a non-empty l2_grid of values >= 0 and 0 < val_fraction < 1')
        unknown = set(fewshot or {}) - set(_FEWSHOT)
        if unknown:
            raise UserError(f"downstream: unknown fewshot option '{sorted(unknown)[0]}' (known: {', '.join(_FEWSHOT)})")
        self.fewshot = {**_FEWSHOT, **(fewshot or {})}
        shots = self.fewshot["shots"]
        self.fewshot["shots"] = [shots] if isinstance(shots, int) else list(shots)
        f = self.fewshot
        if f["classifier"] not in ("prototype", "logreg"):
            raise UserError(f"downstream: fewshot classifier must be 'prototype' or 'logreg', got {f['classifier']!r}")
        if f["n_way"] < 2 or f["n_query"] < 1 or f["episodes"] < 1 or not f["shots"] or min(f["shots"]) < 1:
            raise UserError("downstream: fewshot needs n_way >= 2, n_query >= 1, episodes >= 1 and shots >= 1")
        self.max_train, self.max_test, self.l2, self.max_iter = max_train, max_test, l2, max_iter
        self.l2_grid, self.val_fraction = list(l2_grid), val_fraction
        check_options("downstream", solver, select_by)
        self.batch_size, self.seed, self.solver, self.select_by = batch_size, seed, solver, select_by
        self.loaded = []

    def setup(self, run):
        """Load every dataset now, so that a missing one stops the run before training."""
        self.loaded = []
        protocol_dataset = getattr(getattr(run, "protocol", None), "dataset", None)
        data_root = getattr(run.config, "data_root", None) or getattr(protocol_dataset, "root", None)
        for spec in self.specs:
            label = spec.get("label", spec["name"])
            root, how = resolve_root(spec.get("root"), data_root)
            if root is not None and not root.exists():
                raise UserError(
                    f"downstream dataset '{label}': {root} does not exist (looked up {how}); put "
                    f"'{spec['root']}' there, or set {ROOT_ENV} to the folder that holds it"
                )
            entry = run.registry.get("dataset", spec["name"])
            try:
                ds = entry.factory(
                    root=None if root is None else str(root),
                    resolution=run.dataset.resolution,
                    seed=0,
                    download=run.config.download,
                    **spec.get("options", {}),
                )
            except TypeError as err:
                raise UserError(f"downstream dataset '{label}': {err}") from None
            if "fewshot" in spec["tasks"]:
                for domain, labels in self._domains(ds):
                    for k in self.fewshot["shots"]:
                        try:
                            next(episodes(labels, self.fewshot["n_way"], k, self.fewshot["n_query"], 1, self.seed))
                        except UserError as err:
                            raise UserError(f"downstream dataset '{label}', domain '{domain}': {err}") from None
            self.loaded.append((label, spec["tasks"], ds))

    @torch.no_grad()
    def _embed(self, run, images, idx, desc):
        backbone = run.method.backbone
        was_training = backbone.training
        backbone.eval()
        if run.protocol.eval.precision == "bf16":  # since 0.3.0: as the engine's features (bf16, channels_last)
            out = [embed(run, images, idx, self.batch_size)]
        else:  # 0.2.0's pass, unchanged, so that float32 protocols (v2) keep their numbers
            out = self._embed_fp32(run, images, idx, desc)
        backbone.train(was_training)
        return torch.cat(out)

    def _embed_fp32(self, run, images, idx, desc):
        backbone = run.method.backbone
        out = []
        for s in tqdm(range(0, len(idx), self.batch_size), desc=desc, disable=not run.config.progress, leave=False):
            x = images[torch.from_numpy(idx[s : s + self.batch_size])].to(run.device)
            out.append(backbone(augment.prepare(x, run.dataset.resolution)).float().cpu())
        return out

    def _subset(self, n, cap, rng):
        return np.sort(rng.choice(n, cap, replace=False)) if 0 < cap < n else np.arange(n)

    @staticmethod
    def _domains(ds):
        """Per domain of ``ds``: (name, labels of all its images, train split first, then test)."""
        labels = torch.cat([ds.train.labels, ds.test.labels]).numpy()
        domains = torch.cat([ds.train.domains, ds.test.domains]).numpy()
        names = list(ds.domains) if len(ds.domains) > 1 else [None]
        return [(name, labels if name is None else labels[domains == d]) for d, name in enumerate(names)]

    def _linear(self, run, label, ds):
        rng = np.random.default_rng(self.seed)
        tr = self._subset(len(ds.train), self.max_train, rng)
        te = self._subset(len(ds.test), self.max_test, rng)
        x_tr = self._embed(run, ds.train.images, tr, f"downstream {label} train")
        x_te = self._embed(run, ds.test.images, te, f"downstream {label} test")
        y_tr = ds.train.labels[torch.from_numpy(tr)]
        out = {}
        l2 = self.l2
        if l2 == "select":
            l2, _ = select_l2(x_tr, y_tr, self.l2_grid, self.val_fraction, self.seed, self.max_iter, self.solver, self.select_by)
            out[f"{label}/l2"] = float(l2)
        pred = fit_predict(x_tr, y_tr, x_te, float(l2), self.max_iter, self.solver)
        out[f"{label}/acc"] = float((pred == ds.test.labels[torch.from_numpy(te)]).double().mean())
        return out

    def _fewshot(self, run, label, ds):
        f = self.fewshot
        images = torch.cat([ds.train.images, ds.test.images])
        domains = torch.cat([ds.train.domains, ds.test.domains]).numpy()
        x = self._embed(run, images, np.arange(len(images)), f"downstream {label} few-shot")
        y = torch.cat([ds.train.labels, ds.test.labels])
        out, means = {}, {k: [] for k in f["shots"]}
        for d, (name, _) in enumerate(self._domains(ds)):
            pos = np.arange(len(y)) if name is None else np.flatnonzero(domains == d)
            xd, yd = x[torch.from_numpy(pos)], y[torch.from_numpy(pos)].numpy()
            suffix = "" if name is None else f"_{name}"
            for k in f["shots"]:
                accs = []
                for s, s_y, q, q_y in episodes(yd, f["n_way"], k, f["n_query"], f["episodes"], self.seed + k):
                    s_y, q_y = torch.from_numpy(s_y), torch.from_numpy(q_y)
                    if f["classifier"] == "prototype":
                        pred = prototype_predict(xd[s], s_y, xd[q], f["n_way"])
                    else:
                        pred = fit_predict(xd[s], s_y, xd[q], max_iter=100)
                    accs.append((pred == q_y).double().mean().item())
                means[k].append(float(np.mean(accs)))
                if name is not None:
                    out[f"{label}/acc_{k}shot{suffix}"] = means[k][-1]
                    out[f"{label}/ci95_{k}shot{suffix}"] = float(1.96 * np.std(accs) / np.sqrt(len(accs)))
                else:
                    out[f"{label}/ci95_{k}shot"] = float(1.96 * np.std(accs) / np.sqrt(len(accs)))
        for k, values in means.items():
            out[f"{label}/acc_{k}shot"] = float(np.mean(values))
        return out

    def evaluate(self, run, features, previous):
        out = {}
        for label, tasks, ds in self.loaded:
            if "linear" in tasks:
                out.update(self._linear(run, label, ds))
            if "fewshot" in tasks:
                out.update(self._fewshot(run, label, ds))
        return out


@hookimpl
def ssl_bench_evaluators():
    return {"downstream": Downstream}
