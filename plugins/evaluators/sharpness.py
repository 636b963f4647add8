"""Sharpness of the minimum reached, measured once at the end of training: of the method's own loss, and of one
loss common to all methods.

Hu et al. (ICLR 2022) explain why streaming SSL forgets little by the flatness of its
minima. Two losses are measured, each on one fixed batch, so the numbers are reproducible and
comparable across strategies:

**The method's own loss** (``loss_fn()``): ``batch_size`` training images drawn with ``seed`` from all
experiences, fixed augmented views (drawn with ``seed``). Its numbers compare strategies *within* a
method; across methods they are unlike things (VICReg's loss is about 21, BYOL's about 1):

- ``top_eigenvalue``: the largest (most positive) Hessian eigenvalue (since 0.2.0; 0.1.0 stored the
  largest-*magnitude* one, so a saddle with a large negative eigenvalue read as flat);
  ``dominant_eigenvalue``: the largest-magnitude one, signed (0.1.0's ``top_eigenvalue``). Both from one
  Krylov (Lanczos) space of ``iters`` Hessian-vector products (:func:`ssl_bench.ops.sharpness.top_positive_eigenvalue`,
  since 0.2.1; 0.1.0 and 0.2.0 ran block power iteration with 4 vectors, 4 to 8 times the HVPs);
- ``hessian_trace``: Hutchinson's estimate of tr(H) with ``n_probes`` Rademacher probes;
- ``eps_sharpness``: the largest loss increase found in the box ``|delta_i| <= eps (|w_i| + 1)``
  (Keskar et al. 2017) by ``steps`` steps of projected gradient ascent;
- ``loss``: the loss at the weights themselves.

**One common loss** (``probe = true``; off by default), comparable across methods, issue 33 / claim 6b): the cross-entropy
of a linear probe on the frozen backbone's features, differentiated with respect to the backbone's
parameters, the probe held fixed. The probe is the ``linear`` evaluator's: fitted (L-BFGS logistic
regression, :func:`ssl_bench.blocks.probes.fit`) on the last phase's probe-training features of all
experiences, its L2 strength chosen as ``linear`` chooses it (``l2_grid``, on a seeded 20% of those
features, :func:`ssl_bench.blocks.probes.select_l2`). The loss is its mean cross-entropy on a fixed
labelled batch (``probe_batch_size`` of those probe-training images, drawn with ``seed``, no augmentation,
the backbone in eval mode as when the features were taken). The reference for "common loss" is the
supervised head's or a probe's curvature, as the issue asks; fitting the probe on the whole probe split
rather than on the batch alone is this project's choice (a batch of 256 images holds ~2.5 images of
each of 100 classes, which a probe separates perfectly, leaving no curvature to compare). Keys:
``probe_top_eigenvalue`` (the largest positive one, as above), ``probe_hessian_trace``, ``probe_loss``,
``probe_l2``. The probe's ``solver`` and ``select_by`` are ``linear``'s options (since 0.3.0; the defaults are
0.2.1's numbers). Cost, measured in one process on one thread (random-init ResNet-18 x0.25 at 32 px, 10,000
probe-training features, a busy 2-core machine): with tinyimagenet-cpu v2's options (``probe_batch_size`` 64,
``iters`` 10, ``n_probes`` 4) the probe's part took 50 CPU s, 0.44x the method loss's part (115 s); its
L2 selection and fit on the 10,000 features took about 30 s on their own (wall, same machine), and at
``probe_batch_size`` 128 the power iteration alone took 187 s, hence the protocols' batch of 64.

The operators are :mod:`ssl_bench.ops.sharpness`. ``params = "all"`` differentiates the method's loss with
respect to every trainable parameter of the method (backbone and heads, what the optimiser
moved), ``"backbone"`` only the backbone's; the probe's loss always the backbone's. ``mode = "train"``
evaluates the method's loss as it is trained (BatchNorm on batch statistics); the buffers (BatchNorm running
statistics) are restored before every loss call and afterwards, so measuring changes nothing.
"""

import logging

import numpy as np
import torch
import torch.nn.functional as F

from ssl_bench import hookimpl
from ssl_bench.api import Evaluator
from ssl_bench.blocks import augment, probes
from ssl_bench.errors import UserError
from ssl_bench.ops import reference_ops, sharpness

__version__ = "0.3.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"

log = logging.getLogger(__name__)


class Sharpness(Evaluator):
    name = "sharpness"
    when = "end"

    def __init__(
        self,
        batch_size: int = 128,
        iters: int = 20,
        n_probes: int = 16,
        eps: float = 1e-3,
        steps: int = 10,
        seed: int = 0,
        params: str = "all",
        mode: str = "train",
        probe: bool = False,
        probe_batch_size: int = 256,
        l2_grid: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
        solver: str = "lbfgs64",
        select_by: str = "accuracy",
    ):
        if params not in ("all", "backbone") or mode not in ("train", "eval"):
            raise UserError(
                f"sharpness: params must be 'all' or 'backbone' (got '{params}'), mode 'train' or 'eval' (got '{mode}')"
            )
        if batch_size < 2 or iters < 1 or n_probes < 1 or eps < 0 or steps < 0:
            raise UserError("sharpness: need batch_size >= 2, iters >= 1, n_probes >= 1, eps >= 0, steps >= 0")
        self.batch_size, self.iters, self.n_probes, self.eps, self.steps = batch_size, iters, n_probes, eps, steps
        if probe and (probe_batch_size < 2 or not l2_grid or any(v < 0 for v in l2_grid)):
            raise UserError("sharpness: the probe's loss needs probe_batch_size >= 2 and an l2_grid of values >= 0")
        self.seed, self.params, self.mode = seed, params, mode
        self.probe, self.probe_batch_size, self.l2_grid = probe, probe_batch_size, list(l2_grid)
        probes.check_options("sharpness", solver, select_by)
        self.solver, self.select_by = solver, select_by

    def loss_fn(self, run):
        """The deterministic loss on the fixed batch and views, and a function restoring the method's state."""
        method = run.method
        pool = np.concatenate([np.asarray(e.train_idx) for e in run.experiences])
        rng = np.random.default_rng(self.seed)
        index = np.sort(rng.choice(pool, min(self.batch_size, len(pool)), replace=False))
        batch = run.batch_of(torch.from_numpy(index))
        gen = torch.Generator(device=batch.images.device).manual_seed(self.seed)
        views = augment.method_views(run.augment, method, batch.images, run.dataset.resolution, gen)
        labels = batch.labels if method.uses_labels else None
        buffers = list(method.buffers())
        saved = [b.detach().clone() for b in buffers]
        was_training = method.training
        method.train(self.mode == "train")

        def restore():
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)

        def loss_fn():
            restore()
            return method.loss(views, labels)

        def done():
            restore()
            method.train(was_training)

        return loss_fn, done

    def probe_loss_fn(self, run, features):
        """The fixed probe's cross-entropy on the fixed labelled batch, a function of the backbone's parameters;
        and the probe's L2 strength. Needs the last phase's features (``features``)."""
        x, y = torch.cat(features.train), torch.cat(features.train_labels)
        l2, _ = probes.select_l2(x, y, self.l2_grid, 0.2, self.seed, solver=self.solver, by=self.select_by)
        probe = probes.fit(x, y, l2, solver=self.solver)
        pool = np.concatenate([np.asarray(e.train_idx) for e in run.experiences])
        labels = run.dataset.train.labels[torch.from_numpy(pool)]
        pool = pool[torch.isin(labels, probe.classes).numpy()]  # classes the probe knows
        rng = np.random.default_rng(self.seed + 1)
        index = torch.from_numpy(np.sort(rng.choice(pool, min(self.probe_batch_size, len(pool)), replace=False)))
        batch = run.batch_of(index)
        images = augment.prepare(batch.images, run.dataset.resolution)
        target = torch.searchsorted(probe.classes.to(batch.labels.device), batch.labels)
        backbone = run.method.backbone

        def loss_fn():
            return F.cross_entropy(probe.logits(backbone(images).float()), target)

        return loss_fn, l2

    def evaluate(self, run, features, previous):
        module = run.method.backbone if self.params == "backbone" else run.method
        params = [p for p in module.parameters() if p.requires_grad]
        loss_fn, done = self.loss_fn(run)
        gen = lambda k: torch.Generator().manual_seed(self.seed * 1000 + k)  # noqa: E731 - one stream per measure
        log.info(
            "sharpness: %d parameter tensors, a fixed batch of up to %d images, PyTorch reference ops "
            "(the fused kernels have no second derivative)",
            len(params),
            self.batch_size,
        )
        out = {}
        try:
            with reference_ops():
                with torch.no_grad():
                    out["loss"] = float(loss_fn())
                top, dominant = sharpness.top_positive_eigenvalue(loss_fn, params, iters=self.iters, generator=gen(1))
                out.update(top_eigenvalue=top, dominant_eigenvalue=dominant)
                out["hessian_trace"] = sharpness.hessian_trace(loss_fn, params, n_probes=self.n_probes, generator=gen(2))
                out["eps_sharpness"] = sharpness.eps_sharpness(loss_fn, params, eps=self.eps, steps=self.steps, generator=gen(3))
        finally:
            done()
        if self.probe:
            out.update(self._probe(run, features, gen))
        return out

    def _probe(self, run, features, gen):
        if features is None or not features.train or sum(len(t) for t in features.train) < 2:
            raise UserError("sharpness: the probe's loss needs the last phase's probe-training features")
        backbone = run.method.backbone
        params = [p for p in backbone.parameters() if p.requires_grad]
        was_training = backbone.training
        backbone.eval()  # as the features were taken: BatchNorm on its running statistics, which stay as they are
        try:
            with reference_ops():
                loss_fn, l2 = self.probe_loss_fn(run, features)
                with torch.no_grad():
                    loss = float(loss_fn())
                top, _ = sharpness.top_positive_eigenvalue(loss_fn, params, iters=self.iters, generator=gen(4))
                trace = sharpness.hessian_trace(loss_fn, params, n_probes=self.n_probes, generator=gen(5))
        finally:
            backbone.train(was_training)
        return {"probe_top_eigenvalue": top, "probe_hessian_trace": trace, "probe_loss": loss, "probe_l2": float(l2)}


@hookimpl
def ssl_bench_evaluators():
    return {"sharpness": Sharpness}
