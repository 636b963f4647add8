"""EWC: Elastic Weight Consolidation with the per-sample Fisher of the SSL loss (Kirkpatrick et al., PNAS 2017).

After each phase the importance of a parameter is the diagonal of the empirical Fisher of
the method's own training loss (for SSL methods the SSL loss, as Hu et al., ICLR 2022 do):
the MEAN over samples of the SQUARED per-sample gradient, not the square of a batch-mean
gradient. It is computed by :func:`ssl_bench.ops.fisher.fisher_diagonal` on augmented
views of ``samples`` training samples of the phase, in batches of the protocol's batch size
(the loss of contrastive methods depends on the batch), with the method in eval mode (BN
running statistics do not couple samples; buffers are restored afterwards).

Only ``nn.Linear`` / ``nn.Conv2d`` weights and biases get a per-sample Fisher, so only they
are regularised; BatchNorm parameters are left free (their per-sample gradients are not
available from one backward, and the batch-mean square is not the Fisher).

Fishers of successive phases add up (online EWC with ``decay`` < 1, Schwarz et al., ICML
2018); the penalty is ``0.5 * lam * sum(F * (theta - theta_anchor)^2)`` around the weights at
the end of the previous phase. Default ``lam = 10`` (ours: the Fisher's scale depends on the
method's loss and the model; Kirkpatrick et al. tune lambda per task sequence, and a user should
on a new protocol; ``strategy/ewc/importance_max`` and ``penalty_mean`` in the result file show
how strongly it acted, and importances too stiff for SGD at the learning rate are capped, with a warning).

The method's ``loss`` must be the MEAN over the batch's samples (true of the built-in methods):
it is multiplied by the batch size to give the per-sample SUM that the Fisher op expects.
"""

from __future__ import annotations

from functools import partial

import torch

from ssl_bench import hookimpl
from ssl_bench.blocks.regularizers import QuadraticRegularizer
from ssl_bench.ops import fisher_diagonal

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = "Kirkpatrick et al., Overcoming catastrophic forgetting in neural networks, PNAS 2017"


class EWC(QuadraticRegularizer):
    """EWC with ``lam`` (penalty weight), ``samples`` per phase for the Fisher, ``decay`` of older Fishers."""

    name = "ewc"

    def __init__(self, lam: float = 10.0, samples: int = 512, decay: float = 1.0):
        super().__init__(lam=lam, samples=samples, decay=decay)

    def importance(self, run, index):
        method, train = run.method, run.dataset.train
        batch = run.protocol.train.batch_size
        total, n_total = {}, 0
        for s in range(0, len(index), batch):
            part = torch.from_numpy(index[s : s + batch])
            if len(part) < 2:  # a lone sample has no negatives; it would not be the training loss
                continue
            images = train.images[part].to(run.device)
            labels = train.labels[part].to(run.device) if method.uses_labels else None
            views = run.views(images)
            fisher, n = fisher_diagonal(method, partial(summed_loss, method, views, labels, len(part)), others="skip")
            for k, v in fisher.items():
                total[k] = total.get(k, 0) + v * n
            n_total += n
        return {k: v / n_total for k, v in total.items()}, n_total


def summed_loss(method, views, labels, n):
    """The SUM over the batch's ``n`` samples of their losses (the method's loss is their mean)."""
    return method.loss(views, labels) * n


@hookimpl
def ssl_bench_strategies():
    return {"ewc": EWC}
