"""Sharpness of the minimum the SSL loss reached, measured once at the end of training.

Hu et al. (ICLR 2022) explain why streaming SSL forgets little by the flatness of its
minima. On one fixed batch (``batch_size`` training images drawn with ``seed`` from all
experiences) with fixed augmented views (drawn with ``seed``), ``loss_fn()`` is the method's
own loss, so the numbers are reproducible and comparable across strategies:

- ``top_eigenvalue``: the largest-magnitude Hessian eigenvalue (power iteration on
  Hessian-vector products, ``iters`` iterations);
- ``hessian_trace``: Hutchinson's estimate of tr(H) with ``n_probes`` Rademacher probes;
- ``eps_sharpness``: the largest loss increase found in the box ``|delta_i| <= eps (|w_i| + 1)``
  (Keskar et al. 2017) by ``steps`` steps of projected gradient ascent;
- ``loss``: the loss at the weights themselves.

The operators are :mod:`ssl_bench.ops.sharpness`. ``params = "all"`` differentiates with
respect to every trainable parameter of the method (backbone and heads, what the optimiser
moved), ``"backbone"`` only the backbone's. ``mode = "train"`` evaluates the loss as it is
trained (BatchNorm on batch statistics); the buffers (BatchNorm running statistics) are
restored before every loss call and afterwards, so measuring changes nothing.
"""

import logging

import numpy as np
import torch

from ssl_bench import hookimpl
from ssl_bench.api import Evaluator
from ssl_bench.blocks import augment
from ssl_bench.errors import UserError
from ssl_bench.ops import reference_ops, sharpness

__version__ = "0.1.0"
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
    ):
        if params not in ("all", "backbone") or mode not in ("train", "eval"):
            raise UserError(
                f"sharpness: params must be 'all' or 'backbone' (got '{params}'), mode 'train' or 'eval' (got '{mode}')"
            )
        if batch_size < 2 or iters < 1 or n_probes < 1 or eps < 0 or steps < 0:
            raise UserError("sharpness: need batch_size >= 2, iters >= 1, n_probes >= 1, eps >= 0, steps >= 0")
        self.batch_size, self.iters, self.n_probes, self.eps, self.steps = batch_size, iters, n_probes, eps, steps
        self.seed, self.params, self.mode = seed, params, mode

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
        try:
            with reference_ops():
                with torch.no_grad():
                    loss = float(loss_fn())
                return {
                    "loss": loss,
                    "top_eigenvalue": sharpness.top_eigenvalue(loss_fn, params, iters=self.iters, generator=gen(1)),
                    "hessian_trace": sharpness.hessian_trace(loss_fn, params, n_probes=self.n_probes, generator=gen(2)),
                    "eps_sharpness": sharpness.eps_sharpness(loss_fn, params, eps=self.eps, steps=self.steps, generator=gen(3)),
                }
        finally:
            done()


@hookimpl
def ssl_bench_evaluators():
    return {"sharpness": Sharpness}
