"""Backbone weights: a run's final backbone kept as safetensors, and the protocol's evaluators run on saved weights.

``ssl-bench run --save-backbone`` writes ``<result>.safetensors`` next to the result file
(:func:`save`): the backbone's ``state_dict`` with string metadata ``config_hash`` (sha256 of the
``config`` JSON stored in the result file, so the two can be matched), ``result`` (its file
name), ``protocol``, ``protocol_hash``, ``method``, ``stream``, ``strategy``, ``seed``, ``backbone``
and ``backbone_options`` (JSON) and ``ssl_bench_version``.

:func:`read` and :func:`load_into` load such a file, or any ``state_dict`` of a protocol's backbone
trained elsewhere (``.safetensors``, or a ``torch.save`` file, ``.pt``/``.pth``, read with
``weights_only=True``; a ``{"state_dict": ...}`` wrapper and ``module.``/``backbone.`` key prefixes are
accepted), into a backbone: ``ssl-bench eval`` (:mod:`ssl_bench.engine.standalone`) evaluates them.
Safetensors is the format because it holds tensors only: loading a file runs no code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import ssl_bench
from ssl_bench import results
from ssl_bench.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from ssl_bench.engine.build import Run

log = logging.getLogger(__name__)
FORMAT = "ssl-bench-backbone/1"


def path_for(result: Path) -> Path:
    """Where ``--save-backbone`` puts the weights of the run whose result file is ``result``."""
    return result.with_suffix(".safetensors")


def save(run: Run, result: Path) -> Path:
    """Write the run's backbone next to its (already written) result file; return the weights' path."""
    from safetensors.torch import save as to_bytes

    cfg, protocol = run.config, run.protocol
    stored_config = results.Result(result)["config"]
    meta = {
        "format": FORMAT,
        "config_hash": hashlib.sha256(stored_config.encode()).hexdigest(),
        "result": result.name,
        "protocol": protocol.label,
        "protocol_hash": protocol.hash,
        "method": cfg.method,
        "stream": cfg.stream,
        "strategy": cfg.strategy,
        "seed": str(cfg.seed),
        "backbone": protocol.backbone.name,
        "backbone_options": json.dumps(protocol.backbone.options, sort_keys=True),
        "ssl_bench_version": ssl_bench.__version__,
    }
    # clones: no two entries share storage, so any safetensors reader loads every key
    state = {k: v.detach().cpu().clone().contiguous() for k, v in run.method.backbone.state_dict().items()}
    path = path_for(result)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:  # plain file I/O, as the result file is written: the same permissions (safetensors' own writer makes 0600)
        tmp.write_bytes(to_bytes(state, metadata=meta))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a weights file and its metadata (empty for a ``torch.save`` file)."""
    if not path.is_file():
        raise UserError(f"weights file '{path}' does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except (SafetensorError, OSError) as err:
            raise UserError(f"'{path}' is not a readable safetensors file: {err}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling refused or a damaged file
        raise UserError(f"'{path}' is not a state_dict saved with torch.save (tensors only): {type(err).__name__}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"'{path}' holds no state_dict (a dict of tensors)")
    return state, {}


def load_into(backbone: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Load ``state`` into ``backbone``, all keys and shapes matching (after stripping a common key prefix)."""
    expected = set(backbone.state_dict())
    if set(state) != expected:
        for prefix in ("module.", "backbone.", "module.backbone."):
            stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if set(stripped) == expected:
                state = stripped
                break
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise UserError(
            f"'{where}' does not fit the protocol's backbone: {len(missing)} missing key(s) {missing[:3]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:3]}"
        )
    own = backbone.state_dict()
    wrong = [k for k in sorted(state) if state[k].shape != own[k].shape]
    if wrong:
        k = wrong[0]
        raise UserError(
            f"'{where}' does not fit the protocol's backbone: '{k}' is {tuple(state[k].shape)}, "
            f"the backbone's is {tuple(own[k].shape)} ({len(wrong)} such)"
        )
    backbone.load_state_dict(state)
