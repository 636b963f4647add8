"""Linear probe of the final backbone on whole downstream datasets (transfer), at the end of a run.

The protocol lists the datasets; each is loaded through the registry's dataset plugins at
the protocol's resolution when the run starts (so a missing dataset stops the run before
training, with the dataset plugin's message saying where to put it)::

    [eval.options.downstream]
    datasets = [{ name = "cifar10", root = "data/cifar10" },
                { name = "imagefolder", root = "data/pets", label = "pets", options = { } }]

At the end, the frozen backbone embeds (up to ``max_train``) training and (up to
``max_test``) test images of each dataset, seeded subsets, and the linear probe
(L-BFGS logistic regression on the cached features, as in ``linear``) is fitted on the
first and scored on the second. Keys: ``<label>/acc`` (label defaults to the dataset name).
"""

import numpy as np
import torch
from tqdm.auto import tqdm

from ssl_bench import hookimpl
from ssl_bench.api import Evaluator
from ssl_bench.blocks import augment
from ssl_bench.blocks.probes import fit_predict
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Kornblith et al., Do Better ImageNet Models Transfer Better?, CVPR 2019"

_KEYS = {"name", "root", "options", "label"}


class Downstream(Evaluator):
    name = "downstream"
    when = "end"

    def __init__(
        self,
        datasets=(),
        max_train: int = 10000,
        max_test: int = 10000,
        l2: float = 1e-4,
        max_iter: int = 200,
        batch_size: int = 256,
        seed: int = 0,
    ):
        if not datasets:
            raise UserError("downstream: give eval.options.downstream.datasets, a list of {name, root, options}")
        self.specs = []
        for spec in datasets:
            if not isinstance(spec, dict) or "name" not in spec or set(spec) - _KEYS:
                raise UserError(
                    f"downstream: each dataset must be a table with 'name' and optionally 'root', 'label', "
                    f"'options'; got {spec!r}"
                )
            self.specs.append(dict(spec))
        labels = [s.get("label", s["name"]) for s in self.specs]
        if len(set(labels)) != len(labels):
            raise UserError(f"downstream: datasets listed twice under one label ({labels}); give each a distinct 'label'")
        self.max_train, self.max_test, self.l2, self.max_iter = max_train, max_test, l2, max_iter
        self.batch_size, self.seed = batch_size, seed
        self.loaded = []

    def setup(self, run):
        self.loaded = []
        for spec in self.specs:
            entry = run.registry.get("dataset", spec["name"])
            try:
                ds = entry.factory(
                    root=spec.get("root"),
                    resolution=run.dataset.resolution,
                    seed=0,
                    download=run.config.download,
                    **spec.get("options", {}),
                )
            except TypeError as err:
                raise UserError(f"downstream dataset '{spec['name']}': {err}") from None
            self.loaded.append((spec.get("label", spec["name"]), ds))

    @torch.no_grad()
    def _embed(self, run, images, idx, desc):
        backbone = run.method.backbone
        was_training = backbone.training
        backbone.eval()
        out = []
        for s in tqdm(range(0, len(idx), self.batch_size), desc=desc, disable=not run.config.progress, leave=False):
            x = images[torch.from_numpy(idx[s : s + self.batch_size])].to(run.device)
            out.append(backbone(augment.prepare(x, run.dataset.resolution)).float().cpu())
        backbone.train(was_training)
        return torch.cat(out)

    def _subset(self, n, cap, rng):
        return np.sort(rng.choice(n, cap, replace=False)) if 0 < cap < n else np.arange(n)

    def evaluate(self, run, features, previous):
        out = {}
        for label, ds in self.loaded:
            rng = np.random.default_rng(self.seed)
            tr = self._subset(len(ds.train), self.max_train, rng)
            te = self._subset(len(ds.test), self.max_test, rng)
            x_tr = self._embed(run, ds.train.images, tr, f"downstream {label} train")
            x_te = self._embed(run, ds.test.images, te, f"downstream {label} test")
            pred = fit_predict(x_tr, ds.train.labels[torch.from_numpy(tr)], x_te, self.l2, self.max_iter)
            out[f"{label}/acc"] = float((pred == ds.test.labels[torch.from_numpy(te)]).double().mean())
        return out


@hookimpl
def ssl_bench_evaluators():
    return {"downstream": Downstream}
