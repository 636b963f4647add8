"""Backbone weights: a run's final backbone kept as safetensors, and the protocol's evaluators run on saved weights.

``ssl-bench run --save-backbone`` writes ``<result>.safetensors`` next to the result file
(:func:`save`): the backbone's ``state_dict`` with string metadata ``config_hash`` (sha256 of the
``config`` JSON stored in the result file, so the two can be matched), ``result`` (its file
name), ``protocol``, ``protocol_hash``, ``method``, ``stream``, ``strategy``, ``seed``, ``backbone``
and ``backbone_options`` (JSON) and ``ssl_bench_version``.

``ssl-bench eval WEIGHTS --protocol P`` (:func:`evaluate`) builds P's backbone, loads WEIGHTS into
it and runs P's evaluators on the frozen backbone over P's stream, as after a run's last phase,
then the end-of-run evaluators. WEIGHTS is such a file, or any ``state_dict`` of P's backbone
trained elsewhere: ``.safetensors``, or a ``torch.save`` file (``.pt``/``.pth``, read with
``weights_only=True``; a ``{"state_dict": ...}`` wrapper and ``module.``/``backbone.`` key
prefixes are accepted). Safetensors is the format because it holds tensors only: loading a file
runs no code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import ssl_bench
from ssl_bench import protocol as protocols
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
    from safetensors.torch import save_file

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
    try:
        save_file(state, str(tmp), metadata=meta)
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


def evaluate(
    weights: Path,
    protocol: str,
    stream: str | None = None,
    seed: int | None = None,
    data_root: str | None = None,
    download: bool = False,
    device: str = "auto",
    plugins: list[str] | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The protocol's evaluators on ``weights`` (see the module docstring); returns (metrics, the file's metadata)."""
    from ssl_bench.engine import RunConfig, evaluation, resolve_recipe
    from ssl_bench.engine.build import Run
    from ssl_bench.registry import Registry

    proto = protocols.load(protocol)
    registry = Registry.discover(list(plugins or []))
    state, meta = read(weights)
    if meta.get("backbone") and meta["backbone"] != proto.backbone.name:
        raise UserError(f"'{weights}' holds a '{meta['backbone']}' backbone, protocol {proto.label} uses '{proto.backbone.name}'")
    if meta.get("protocol_hash") and meta["protocol_hash"] != proto.hash:
        log.warning("'%s' was trained under %s, evaluated under %s", weights, meta.get("protocol"), proto.label)
    if seed is None:
        seed = int(meta["seed"]) if meta.get("seed", "").isdigit() else proto.seeds[0]
    with tempfile.TemporaryDirectory(prefix="ssl-bench-eval-") as out:  # evaluators that look for other runs find none
        config = RunConfig(
            protocol=proto,
            method=proto.defaults.method,
            stream=stream or proto.defaults.stream,
            strategy=proto.defaults.strategy,
            seed=seed,
            out=Path(out),
            data_root=data_root,
            download=download,
            device=device,
            plugins=list(plugins or []),
            progress=progress,
        )
        run = Run(resolve_recipe(config, registry), registry)
        load_into(run.method.backbone, state, weights)
        feats = evaluation.features(run)
        metrics = evaluation.evaluate(run, "phase", feats, None)
        metrics.update(evaluation.evaluate(run, "end", feats, None))
    return metrics, meta
