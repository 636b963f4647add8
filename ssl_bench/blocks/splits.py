"""Stream manifests: a small JSON or TOML file that lists, per experience, what it holds.

A manifest reproduces a paper's exact split, and every stream can be exported to one
(``ssl-bench stream-export``). Layout (JSON shown; TOML uses ``[[experiences]]`` tables)::

    {"format": "ssl-bench-stream", "version": 1,
     "dataset": "tiny-imagenet",            # optional: refuse to load on another dataset
     "source": {...},                       # optional, free-form: how the split was made
     "experiences": [
        {"name": "animals", "classes": ["n01443537", "n01629819"]},   # every sample of these classes
        {"domains": ["sketch"]},                                       # every sample of these domains
        {"classes": ["cat"], "domains": ["real"]},                     # both conditions
        {"train": ["train/a/1.jpg", ...], "test": ["val/7.jpg", ...]}  # exact sample ids (ImageSet.ids)
     ]}

``train``/``test`` may also hold integer indices (for datasets without sample ids). Names
are class ids (``Dataset.classes``) or, failing that, human-readable class names. The
export writes classes/domains where they select exactly the experience's samples, else ids.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from ssl_bench.api import Dataset, Experience, ImageSet
from ssl_bench.errors import UserError

FORMAT = "ssl-bench-stream"
VERSION = 1
#: a larger manifest is refused before it is parsed: 1.28M ImageNet sample ids take about 56 MB; beyond that,
#: list classes or domains (a manifest's numbers would take gigabytes of memory to parse)
MAX_BYTES = 64 * 2**20


def read(path: str | Path) -> dict[str, Any]:
    """Parse and check the top level of a manifest file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"manifest {path} does not exist")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise UserError(
            f"manifest {path} is {size / 2**20:.0f} MiB, more than a manifest may be ({MAX_BYTES / 2**20:.0f} MiB; "
            "1.28M sample ids take about 56): list classes or domains instead of sample ids"
        )
    try:
        data = tomllib.loads(path.read_text()) if path.suffix.lower() == ".toml" else json.loads(path.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"manifest {path} cannot be parsed: {err}") from None
    except RecursionError:
        raise UserError(f"manifest {path} nests lists or tables too deeply to be a manifest") from None
    if not isinstance(data, dict) or data.get("format", FORMAT) != FORMAT:
        raise UserError(f'manifest {path}: not an ssl-bench stream manifest (expected "format": "{FORMAT}")')
    version = data.get("version", VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f'manifest {path}: "version" must be the integer {VERSION}, got {version!r}')
    if version != VERSION:
        raise UserError(f"manifest {path}: version {version} is not supported (this ssl-bench reads version {VERSION})")
    exps = data.get("experiences")
    if not isinstance(exps, list) or not exps or not all(isinstance(e, dict) for e in exps):
        raise UserError(f"manifest {path}: 'experiences' must be a non-empty list of tables")
    return data


def _names(kind: str, wanted: Any, names: list[str], alt: list[str] | None, where: str) -> list[int]:
    if not isinstance(wanted, list) or not wanted:
        raise UserError(f"{where}: '{kind}' must be a non-empty list of names")
    odd = next((w for w in wanted if not isinstance(w, str)), None)
    if odd is not None:
        raise UserError(f"{where}: '{kind}' must list names (strings), got {repr(odd)[:80]}")
    _no_repeats(kind, wanted, where)
    lookup = {n: i for i, n in enumerate(alt or [])}
    lookup.update({n: i for i, n in enumerate(names)})
    missing = [w for w in wanted if w not in lookup]
    if missing:
        raise UserError(f"{where}: unknown {dict(classes='class', domains='domain')[kind]} '{missing[0]}'")
    return [lookup[w] for w in wanted]


def _select(split: ImageSet, classes: list[int] | None, domains: list[int] | None) -> np.ndarray:
    """Indices of the samples of ``split`` whose class is in ``classes`` and domain in ``domains`` (None: any)."""
    keep = np.ones(len(split), dtype=bool)
    if classes is not None:
        keep &= np.isin(split.labels.numpy(), classes)
    if domains is not None:
        keep &= np.isin(split.domains.numpy(), domains)
    return np.flatnonzero(keep)


def _samples(kind: str, wanted: Any, ids: list[str] | None, n: int, where: str) -> np.ndarray:
    if not isinstance(wanted, list) or not wanted:
        raise UserError(f"{where}: '{kind}' must be a non-empty list of sample ids or indices")
    odd = next((w for w in wanted if isinstance(w, bool) or not isinstance(w, (int, str))), None)
    if odd is not None:
        raise UserError(f"{where}: '{kind}' must list sample ids (strings) or indices (integers), got {repr(odd)[:80]}")
    _no_repeats(kind, wanted, where)
    if all(isinstance(w, int) for w in wanted):
        if min(wanted) < 0 or max(wanted) >= n:  # Python integers: a huge one is out of range, not an overflow
            raise UserError(f"{where}: '{kind}' index out of range 0..{n - 1}")
        return np.unique(np.asarray(wanted, dtype=np.int64))
    if not all(isinstance(w, str) for w in wanted):
        raise UserError(f"{where}: '{kind}' mixes sample ids and indices; list one kind")
    if ids is None:
        raise UserError(f"{where}: the dataset has no sample ids; list '{kind}' as integer indices")
    lookup = {s: i for i, s in enumerate(ids)}
    missing = [w for w in wanted if w not in lookup]
    if missing:
        raise UserError(f"{where}: unknown {kind} sample id '{missing[0]}' ({len(missing)} unknown)")
    return np.unique(np.asarray([lookup[w] for w in wanted], dtype=np.int64))


def _no_repeats(kind: str, wanted: list, where: str) -> None:
    """A list that names a class, domain or sample twice is a mistake (a copy-paste, a merged split)."""
    seen: set = set()
    for w in wanted:
        if w in seen:
            raise UserError(f"{where}: '{kind}' lists {repr(w)[:80]} twice")
        seen.add(w)


def experiences(dataset: Dataset, data: dict[str, Any], where: str = "manifest") -> list[Experience]:
    """The experiences a parsed manifest describes on ``dataset``."""
    if data.get("dataset") not in (None, dataset.name):
        raise UserError(
            f"{where} was made for dataset '{data['dataset']}', not '{dataset.name}'; "
            'remove its "dataset" entry to use it anyway'
        )
    out = []
    for i, entry in enumerate(data["experiences"]):
        at = f"{where}, experience {i}"
        unknown = set(entry) - {"name", "classes", "domains", "train", "test"}
        if unknown:
            raise UserError(f"{at}: unknown key '{sorted(unknown)[0]}' (use name, classes, domains, train, test)")
        by_ids = "train" in entry or "test" in entry
        if by_ids and ("classes" in entry or "domains" in entry):
            raise UserError(f"{at}: give either sample ids (train, test) or classes/domains, not both")
        if by_ids:
            if "train" not in entry or "test" not in entry:
                raise UserError(f"{at}: sample ids need both 'train' and 'test' lists")
            tr = _samples("train", entry["train"], dataset.train.ids, len(dataset.train), at)
            te = _samples("test", entry["test"], dataset.test.ids, len(dataset.test), at)
            classes = sorted(set(dataset.train.labels[tr].tolist()))
            domains = sorted(set(dataset.train.domains[tr].tolist()))
        elif "classes" in entry or "domains" in entry:
            chosen_classes = (
                _names("classes", entry["classes"], dataset.classes, dataset.class_names, at) if "classes" in entry else None
            )
            chosen_domains = _names("domains", entry["domains"], dataset.domains, None, at) if "domains" in entry else None
            tr, te = _select(dataset.train, chosen_classes, chosen_domains), _select(dataset.test, chosen_classes, chosen_domains)
            if len(tr) == 0 or len(te) == 0:
                raise UserError(f"{at}: selects no {'training' if len(tr) == 0 else 'held-out'} images")
            classes = chosen_classes if chosen_classes is not None else sorted(set(dataset.train.labels[tr].tolist()))
            domains = chosen_domains if chosen_domains is not None else sorted(set(dataset.train.domains[tr].tolist()))
        else:
            raise UserError(f"{at}: list 'classes', 'domains', or 'train' and 'test' sample ids")
        out.append(
            Experience(
                index=i,
                train_idx=tr,
                test_idx=te,
                classes=[int(c) for c in classes],
                domains=[int(d) for d in domains],
                name=str(entry.get("name", f"experience {i}")),
            )
        )
    return out


def _exact(split: ImageSet, idx: np.ndarray, classes: list[int], domains: list[int]) -> bool:
    keep = np.isin(split.labels.numpy(), classes) & np.isin(split.domains.numpy(), domains)
    return np.array_equal(np.flatnonzero(keep), np.sort(np.asarray(idx)))


def describe(dataset: Dataset, exps: list[Experience], source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest (as a dict) that reproduces ``exps`` exactly on ``dataset``."""
    entries = []
    all_domains = list(range(len(dataset.domains)))
    for e in exps:
        entry: dict[str, Any] = {"name": e.name or f"experience {e.index}"}
        if _exact(dataset.train, e.train_idx, e.classes, e.domains) and _exact(dataset.test, e.test_idx, e.classes, e.domains):
            if sorted(e.classes) != list(range(len(dataset.classes))):
                entry["classes"] = [dataset.classes[c] for c in e.classes]
            if sorted(e.domains) != all_domains or "classes" not in entry:
                entry["domains"] = [dataset.domains[d] for d in e.domains]
        else:
            for key, split, idx in (("train", dataset.train, e.train_idx), ("test", dataset.test, e.test_idx)):
                idx = np.sort(np.asarray(idx)).tolist()
                entry[key] = [split.ids[i] for i in idx] if split.ids is not None else idx
        entries.append(entry)
    return {"format": FORMAT, "version": VERSION, "dataset": dataset.name, "source": source or {}, "experiences": entries}


def write(path: str | Path, manifest: dict[str, Any]) -> Path:
    """Write a manifest as JSON, or as TOML when ``path`` ends in ``.toml``."""
    path = Path(path)
    if path.suffix.lower() == ".toml":
        text = _toml(manifest)
    else:
        text = json.dumps(manifest, indent=1) + "\n"
    try:
        path.write_text(text)
    except OSError as err:
        raise UserError(f"cannot write manifest {path}: {err.strerror}") from None
    return path


def _toml(manifest: dict[str, Any]) -> str:
    """The manifest in TOML (its values are strings, numbers and lists of them; JSON quoting is valid TOML)."""
    value = lambda v: json.dumps(v, ensure_ascii=True)  # noqa: E731
    lines = [
        f"format = {value(manifest['format'])}",
        f"version = {manifest['version']}",
        f"dataset = {value(manifest['dataset'])}",
    ]
    if manifest.get("source"):
        lines.append("source = { " + ", ".join(f"{json.dumps(k)} = {value(v)}" for k, v in manifest["source"].items()) + " }")
    for entry in manifest["experiences"]:
        lines += ["", "[[experiences]]"] + [f"{k} = {value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"
