"""Contrastive (InfoNCE) losses: dense PyTorch references."""

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: the 2N x 2N cosine-similarity matrix with its diagonal masked.

    Row ``i`` has its positive at ``i + N`` (and vice versa); the loss is the mean
    cross-entropy over all 2N rows.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    logits = z @ z.t() / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float, symmetric: bool = True) -> torch.Tensor:
    """InfoNCE of ``q`` against ``k``: the positive of row i is column i. Symmetric averages both directions."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = q @ k.t() / temperature
    target = torch.arange(q.shape[0], device=q.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.t(), target)) / 2
    return loss


def moco_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE: each query against its key (positive) and every entry of ``queue`` (negatives)."""
    q, k, queue = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.t()
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
