"""What a result file must be to count: whole, unedited, consistent (:func:`check`), and readable without
killing or hanging the reader (:func:`crashing`, :mod:`ssl_bench.results.guard`). ``ssl-bench leaderboard``,
``submit``, ``export`` and ``report`` apply the same checks.
"""

from __future__ import annotations

import json
import math
import re

import h5py
import numpy as np

from ssl_bench.errors import UserError
from ssl_bench.names import NAME_PATTERN
from ssl_bench.results.file import HASH_ATTR, IDENTITY, REQUIRED_ATTRS, TOLERANCE, Result, content_hash
from ssl_bench.results.guard import crashing  # noqa: F401 - re-exported: the guarded read of many files


def check(r: Result) -> dict[str, float]:
    """Is ``r`` a whole, unedited result file? Return its summary recomputed from the arrays.

    The checks ``ssl-bench leaderboard`` and ``submit`` share (``submit`` adds the shipped
    protocol, the seeds and plugin versions): the required attributes and datasets are there;
    names match :data:`ssl_bench.names.NAME_PATTERN`; every identity attribute (:data:`IDENTITY`) equals the
    stored config's, and the stored protocol hashes to ``protocol_hash``; the accuracy matrix
    is [phases, experiences] in [0, 1]; the stored summary equals the recomputed one key by
    key; and :func:`content_hash` matches. A :class:`UserError` says which check failed.
    """
    where = r.where
    r.require(REQUIRED_ATTRS, ("config", "protocol_json", "metrics/acc_matrix"))
    _check_identity(r)
    acc = r.acc_matrix
    if acc.ndim != 2 or acc.size == 0 or acc.dtype.kind not in "fiu":
        raise UserError(
            f"{where}: metrics/acc_matrix must be a non-empty numeric [phases, experiences] matrix, got {acc.dtype} {acc.shape}"
        )
    if not np.all(np.isfinite(acc)) or acc.min() < 0 or acc.max() > 1:
        raise UserError(f"{where}: metrics/acc_matrix has values outside [0, 1]")
    init = r.get("metrics/acc_init")
    if init is not None and (
        np.shape(init) != (acc.shape[1],)
        or np.asarray(init).dtype.kind not in "fiu"
        or not np.all((np.asarray(init) >= 0) & (np.asarray(init) <= 1))
    ):
        raise UserError(f"{where}: metrics/acc_init must be {acc.shape[1]} accuracies in [0, 1], one per experience")
    if "phases/names" in r.shapes and r.shapes["phases/names"] != (acc.shape[0],):
        raise UserError(f"{where}: phases/names must name the {acc.shape[0]} phases of the accuracy matrix")
    recomputed = _check_summary(r)
    stored_hash = r.attrs.get(HASH_ATTR)
    if not stored_hash:
        raise UserError(f"{where} has no {HASH_ATTR}: it was written by an older ssl-bench; re-run it")

    def rehash(f):
        # the limits again: the file may have been replaced since it was opened, and the hash reads everything
        f.visititems(lambda name, obj: r._check_dataset(name, obj) if isinstance(obj, h5py.Dataset) else None)
        return content_hash(f)

    with r._open() as f:
        actual = r._guard(lambda: rehash(f))
    if actual != stored_hash:
        raise UserError(f"{where}: its contents do not match its {HASH_ATTR}: the file was edited after the run, or is damaged")
    return recomputed


def _check_identity(r: Result) -> None:
    where, a, config = r.where, r.attrs, r.config
    for key in ("protocol", "method", "stream", "strategy"):
        parts = a[key].split("+") if isinstance(a[key], str) and key == "strategy" else [a[key]]
        if not all(isinstance(p, str) and NAME_PATTERN.fullmatch(p) for p in parts):
            raise UserError(
                f"{where}: its {key} attribute {str(a[key])[:80]!r} is not a valid name (letters, digits, '-', '_', '.', '+')"
            )
    if not isinstance(a["protocol_hash"], str) or not re.fullmatch(r"[0-9a-f]{64}", a["protocol_hash"]):
        raise UserError(f"{where}: its protocol_hash attribute is not a sha256 hex digest")
    for key in ("seed", "protocol_version"):
        if not isinstance(a[key], int) or isinstance(a[key], bool):
            raise UserError(f"{where}: its {key} attribute {str(a[key])[:80]!r} is not an integer")
    proto = config.get("protocol") if isinstance(config.get("protocol"), dict) else {}
    expected = {
        "method": config.get("method"),
        "stream": config.get("stream"),
        "strategy": config.get("strategy"),
        "seed": config.get("seed"),
        "protocol_hash": config.get("protocol_hash"),
        "protocol": proto.get("name"),
        "protocol_version": proto.get("version"),
    }
    for key in IDENTITY:
        if a[key] != expected[key]:
            want = expected[key] if isinstance(expected[key], int) else repr(str(expected[key])[:80])
            raise UserError(
                f"{where}: its {key} attribute {a[key]!r} differs from the run's stored configuration "
                f"({want}): the file was relabelled or damaged"
            )
    from ssl_bench import protocol as protocols

    try:
        stored = json.loads(r["protocol_json"])
        valid = protocols.Protocol.model_validate(stored)
    except Exception as err:  # noqa: BLE001 - any problem with the stored text is the file's
        raise UserError(f"{where}: its stored protocol_json is not a valid protocol ({type(err).__name__})") from None
    if valid.hash != a["protocol_hash"]:
        raise UserError(
            f"{where}: the protocol stored in the file hashes to {valid.hash[:12]}, not to its "
            f"protocol_hash attribute {a['protocol_hash'][:12]}: the file was edited"
        )
    if stored != proto:
        raise UserError(f"{where}: its protocol_json differs from the protocol in its stored configuration: the file was edited")


def _check_summary(r: Result) -> dict[str, float]:
    """The stored summary must be exactly what the stored arrays give; say which key differs."""
    where, recomputed, stored = r.where, r.summary, r.stored_summary
    for key in sorted(set(recomputed) | set(stored)):
        value = stored.get(key)
        shown = value if isinstance(value, (int, float)) else repr(str(value)[:40])  # file text: quoted, never raw
        if key not in stored:
            raise UserError(
                f"{where}: summary key '{key}' is missing (recomputed from the arrays: "
                f"{recomputed[key]:.6g}); re-run with this version of ssl-bench"
            )
        if key not in recomputed:
            raise UserError(
                f"{where}: summary key {str(key)[:40]!r} = {shown} cannot be recomputed from the stored arrays; "
                "remove it or re-run"
            )
        try:
            a = float(value)
        except (TypeError, ValueError):
            a = float("inf")
        b = float(recomputed[key])
        if not (math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE) or (math.isnan(a) and math.isnan(b))):
            raise UserError(
                f"{where}: summary key '{key}' is {shown} but the stored arrays give {b:.6g}: "
                "the number was edited, or the file is damaged"
            )
    return recomputed
