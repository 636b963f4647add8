"""Multi-process training under ``torchrun``: process-group set-up and rank helpers.

Under ``torchrun --nproc_per_node=N ssl-bench run ...`` every process trains a slice of each
global batch with DistributedDataParallel (BatchNorm synchronised on GPUs); rank 0 evaluates,
checkpoints and writes the result file. Without torchrun nothing here does anything.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: str) -> str:
    """Join the process group when launched by torchrun; return the device this process uses."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu" if device == "auto" else device


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel (BatchNorm synchronised on GPUs) when there are several processes."""
    if world_size() == 1:
        return module
    device = next(module.parameters()).device
    if device.type == "cuda":  # SyncBatchNorm runs on GPUs only
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
