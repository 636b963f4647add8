"""MAS: Memory Aware Synapses, a label-free parameter regulariser (Aljundi et al., ECCV 2018).

After each phase, the importance of every backbone parameter is the mean over samples of
the absolute gradient of the squared L2 norm of the backbone's representation,
``|d ||f(x)||^2 / d theta|`` (computed per sample, backbone in eval mode, images without
augmentation); it is added to the importances of earlier phases (``decay`` < 1 shrinks the
old ones first). While training later phases the quadratic penalty
``lam * sum(importance * (theta - theta_anchor)^2)`` (the MAS paper's penalty, Eq. 3, so that its
lambda values transfer) pulls the parameters towards
their values at the end of the previous phase; its gradient is written straight into
``.grad`` after the backward pass (:class:`ssl_bench.blocks.regularizers.QuadraticRegularizer`,
which ``ewc`` uses too, with another importance).
Hu et al. (ICLR 2022) use MAS this way for streaming SSL pre-training.

Default ``lam = 0.05`` (ours: the importances scale with the representation's norm, so lam must
be tuned per protocol, as Aljundi et al. tune their regulariser weight per sequence; on the
built-in ``forgetting`` protocol, lr 0.1, importances reach ~100 and lam = 0.5 diverges; 0.05 is as
strong as the 0.1 of ssl-bench 0.1.0, whose penalty had a factor 1/2 that the paper's has not). A
penalty too stiff for SGD at the learning rate is capped where it would diverge, for the parameters that take
plain SGD steps (all under SGD, biases and norms under LARS; recorded, with a warning);
``strategy/mas/importance_max`` and ``penalty_mean`` in the result file show how strongly it acted.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, grad, vmap

from ssl_bench import hookimpl
from ssl_bench.blocks import augment
from ssl_bench.blocks.regularizers import QuadraticRegularizer

__version__ = "0.3.0"
__license__ = "Apache-2.0"
__paper__ = "Aljundi et al., Memory Aware Synapses: Learning What (not) to Forget, ECCV 2018"


def mas_importance(backbone: torch.nn.Module, images: torch.Tensor, chunk: int = 16) -> dict[str, torch.Tensor]:
    """Mean over ``images`` (float, normalised) of ``|d ||backbone(x)||^2 / d theta|``, one gradient per sample."""
    params = {k: v.detach() for k, v in backbone.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in backbone.named_buffers()}

    def sq_norm(p, x):
        return functional_call(backbone, (p, buffers), (x.unsqueeze(0),)).pow(2).sum()

    per_sample = vmap(grad(sq_norm), in_dims=(None, 0))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for s in range(0, len(images), chunk):
        for k, g in per_sample(params, images[s : s + chunk]).items():
            total[k] += g.abs().sum(0)
    return {k: v / max(1, len(images)) for k, v in total.items()}


class MAS(QuadraticRegularizer):
    """MAS on the backbone's parameters: ``lam`` (penalty weight), ``samples`` per phase for the importance."""

    name = "mas"
    factor = 1.0  # MAS (Aljundi et al., Eq. 3): lam * sum(Omega * (theta - theta*)^2), no 1/2

    def __init__(self, lam: float = 0.05, samples: int = 512, decay: float = 1.0, chunk: int = 16):
        super().__init__(lam=lam, samples=samples, decay=decay, chunk=chunk)

    def importance(self, run, index):
        backbone = run.method.backbone
        prefix = next(n for n, m in run.method.named_modules() if m is backbone)
        images = augment.prepare(run.dataset.train.images[torch.from_numpy(index)].to(run.device), run.dataset.resolution)
        imp = mas_importance(backbone, images, self.chunk)
        return {f"{prefix}.{k}": v for k, v in imp.items()}, len(index)


@hookimpl
def ssl_bench_strategies():
    return {"mas": MAS}
