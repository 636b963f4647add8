"""Domain-incremental stream: one visual domain per experience, the same classes throughout.

Default order: the dataset's domains named as in DomainNet come first, in the order real,
quickdraw, painting, sketch, infograph, clipart, which is CaSSLe's six-domain order (Fini et al.,
Self-Supervised Models are Continual Learners, CVPR 2022, whose code Hu et al.'s domain-incremental
setting is compared with here); the other domains follow in the dataset's order. Option ``order``
(a list of domain names) sets it explicitly.
With ``T`` experiences the first ``T`` domains of the order are used; asking for more
experiences than domains is an error.
"""

import logging

import numpy as np

from ssl_bench import hookimpl
from ssl_bench.api import Experience
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"

log = logging.getLogger(__name__)

DOMAINNET_ORDER = ["real", "quickdraw", "painting", "sketch", "infograph", "clipart"]


def default_order(domains: list[str]) -> list[str]:
    known = [d for d in DOMAINNET_ORDER if d in domains]
    return known + [d for d in domains if d not in known]


def domain_incremental(dataset, n_experiences, seed, order=None):
    """One experience per domain, in ``order`` (default: DomainNet's order, then the dataset's)."""
    if order is None:
        order = default_order(dataset.domains)
    else:
        if isinstance(order, str):
            order = [d.strip() for d in order.split(",") if d.strip()]
        unknown = [d for d in order if d not in dataset.domains]
        if unknown:
            raise UserError(f"domain stream: order names domain '{unknown[0]}', not one of {', '.join(dataset.domains)}")
        if len(set(order)) != len(order):
            raise UserError("domain stream: order names a domain twice")
    if n_experiences < 1 or n_experiences > len(order):
        raise UserError(
            f"domain stream: {n_experiences} experiences but only {len(order)} domains "
            f"({', '.join(order)}); use 1..{len(order)} experiences"
        )
    train_d, test_d = dataset.train.domains.numpy(), dataset.test.domains.numpy()
    train_l = dataset.train.labels.numpy()
    out = []
    for i, name in enumerate(order[:n_experiences]):
        d = dataset.domains.index(name)
        tr, te = np.flatnonzero(train_d == d), np.flatnonzero(test_d == d)
        if len(tr) == 0 or len(te) == 0:
            raise UserError(
                f"domain stream: domain '{name}' has no {'training' if len(tr) == 0 else 'held-out'} images "
                f"in dataset {dataset.name}"
            )
        out.append(
            Experience(
                index=i, train_idx=tr, test_idx=te, classes=sorted(set(train_l[tr].tolist())), domains=[d], name=f"domain {name}"
            )
        )
    classes = [set(e.classes) for e in out]
    if any(c != classes[0] for c in classes):
        log.warning(
            "domain stream: the domains do not all hold the same classes (%s)",
            ", ".join(f"{e.name}: {len(e.classes)}" for e in out),
        )
    return out


@hookimpl
def ssl_bench_streams():
    return {"domain": domain_incremental}
