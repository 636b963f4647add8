"""ssl-bench report: handmade result files whose answers are known (no training)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ssl_bench import protocol as protocols
from ssl_bench import results
from ssl_bench.cli import main
from ssl_bench.errors import UserError
from ssl_bench.results import claims as report
from ssl_bench.results import continual
from ssl_bench.results.claims import base

T = 4
SMOKE = protocols.load("smoke")
SEEDS = (0, 1)
JITTER = {0: -0.01, 1: 0.01}  # per seed, shared by the runs of one seed, so paired gaps are exact
GAP = {"instance": 0.01, "class": 0.015, "distant": 0.05, "domain": 0.06}
BASE = {"simclr": 0.60, "byol": 0.50, "supervised": 0.70}


def variant(name: str, epochs: float, stages=()) -> protocols.Protocol:
    d = SMOKE.model_dump(mode="json")
    d["name"], d["train"]["epochs_per_experience"], d["train"]["stages"] = name, epochs, list(stages)
    return protocols.Protocol.model_validate(d)


def matrix(strategy: str, final: float, peak: float) -> tuple[np.ndarray, list[list[int]]]:
    """An accuracy matrix with final_avg_acc = final and (sequential-like) forgetting_max = peak - final."""
    if strategy == "joint":
        return np.full((1, T), final), [list(range(T))]
    plan = [[i] for i in range(T)] + ([list(range(T))] if strategy == "hybrid" else [])
    acc = np.full((len(plan), T), peak)
    acc[-1] = final
    return acc, plan


def make(
    folder,
    method,
    stream,
    strategy,
    seed,
    final,
    *,
    peak=None,
    auc=None,
    auc_slope=0.0,
    proto=SMOKE,
    proto_json=None,
    features=None,
    sharpness=None,
    probe_sharpness=None,
    downstream=None,
    init=0.1,
    warmup=0.1,
    seconds=60.0,
    device="cpu: test x2",
    steps=100,
):
    """A result file without training. ``auc``: the last phase's collapse AUC; earlier phases get
    ``auc - auc_slope * (row mean - final)`` (``auc_slope`` > 0: a phase that is more accurate is less collapsed).
    ``warmup``: the recipe's warm-up as a share of one phase. ``proto_json``: the stored protocol, if not ``proto``'s."""
    acc, plan = matrix(strategy, final, final + 0.05 if peak is None else peak)
    stored = protocols.Protocol.model_validate(proto_json) if proto_json else proto  # what the file was made under
    made = {"method": method, "stream": stream, "strategy": strategy, "seed": seed, "plugins": []}
    arrays = {
        "metrics/acc_matrix": acc,
        "metrics/acc_init": np.full(T, init),
        "phases/experiences": json.dumps(plan),
        "protocol_json": json.dumps(stored.model_dump(mode="json"), sort_keys=True),
        "config": json.dumps(made | {"protocol": stored.model_dump(mode="json"), "protocol_hash": stored.hash}),
        "recipe": json.dumps({"warmup_epochs": warmup * proto.train.epochs_per_experience}),
    }
    if auc is not None:
        arrays["metrics/collapse/auc"] = auc - auc_slope * (acc.mean(axis=1) - final)
    if features is not None:
        arrays["metrics/cka/features"] = np.stack([features] * len(plan)).astype(np.float16)
        arrays["metrics/cka/index"] = np.stack([np.arange(len(features))] * len(plan))
    if sharpness is not None:
        arrays["end/sharpness/top_eigenvalue"] = np.float64(sharpness)
        arrays["end/sharpness/hessian_trace"] = np.float64(10 * sharpness)
    if probe_sharpness is not None:
        arrays["end/sharpness/probe_top_eigenvalue"] = np.float64(probe_sharpness)
        arrays["end/sharpness/probe_hessian_trace"] = np.float64(10 * probe_sharpness)
    for label, value in (downstream or {}).items():  # a label (its linear probe's accuracy) or a whole key
        arrays[f"end/downstream/{label if '/' in label else label + '/acc'}"] = np.float64(value)
    attrs = {
        "protocol": stored.name,
        "protocol_version": stored.version,
        "protocol_hash": stored.hash,
        "method": method,
        "stream": stream,
        "strategy": strategy,
        "seed": seed,
        "device": device,
        "seconds": seconds,
        "steps": steps,
        "ssl_bench_version": "0.1.0",
        "torch_version": "test",
        "plugins": {method: "0.1.0"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / results.result_name(proto.label, method, stream, strategy, seed)
    # a whole, consistent file: the report reads only files that pass results.check, as the leaderboard does
    return results.write(path, attrs, arrays, {"summary": continual.summarize(arrays)})


def auc_of(method, strategy, final):
    """Collapse AUC falling with accuracy, joint more collapsed than sequential, hybrid in between."""
    return 0.9 - final + {"joint": 0.1, "hybrid": 0.05}.get(strategy, 0.0)


def twin(name: str, per_class: int, width: float) -> protocols.Protocol:
    """A smoke twin that differs in the training images per class and the backbone width (claim 7)."""
    d = SMOKE.model_dump(mode="json")
    d["name"] = name
    d["dataset"]["options"]["train_per_class"] = per_class
    d["backbone"]["options"]["width"] = width
    return protocols.Protocol.model_validate(d)


TWINS = {  # claim 7: (images per class, width) -> the last phase's collapse AUC of simsiam
    (10, 0.25): 0.5,
    (30, 0.25): 0.6,
    (100, 0.25): 0.7,
    (100, 0.5): 0.6,
}


@pytest.fixture(scope="module")
def reproducing(tmp_path_factory):
    """Files under which every claim is reproduced. Claim 4a: within a run, the earlier phases (10 points more
    accurate than the last, as forgetting makes them) are less collapsed, which outweighs joint runs being more
    accurate and more collapsed than sequential ones (claims 1 and 4b)."""
    root = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    joint_x = rng.normal(size=(64, 8))
    for seed in SEEDS:
        j = JITTER[seed]
        for method in ("simclr", "byol"):
            b = BASE[method]
            for stream, gap in GAP.items():
                for strategy, final in (("sequential", b + j), ("joint", b + gap + j)):
                    extra = {}
                    if (method, stream) == ("simclr", "instance"):  # near the joint model's features, flatter
                        noisy = joint_x + 0.1 * rng.normal(size=joint_x.shape)
                        extra = {
                            "features": joint_x if strategy == "joint" else noisy,
                            "probe_sharpness": 1.0 + j if strategy == "sequential" else None,
                        }
                    auc = auc_of(method, strategy, final)
                    make(root, method, stream, strategy, seed, final, peak=final + 0.1, auc=auc, auc_slope=2.0, **extra)
            seq, joint = b + j, b + GAP["domain"] + j  # replay closes 80% of the domain gap, mas 70%
            for strategy, frac in (("replay", 0.8), ("mas", 0.7)):
                make(root, method, "domain", strategy, seed, seq + frac * (joint - seq))
            hybrid = b + GAP["instance"] + 0.01 + j  # more accurate than joint and sequential, less collapsed than joint
            auc = auc_of(method, "hybrid", hybrid)
            make(root, method, "instance", "hybrid", seed, hybrid, peak=hybrid + 0.1, auc=auc, auc_slope=2.0)
        make(
            root,
            "supervised",
            "instance",
            "sequential",
            seed,
            0.7 + j,
            peak=0.95 + j,
            probe_sharpness=5.0 + j,
            features=rng.normal(size=(64, 8)),
        )
        make(root, "supervised", "instance", "joint", seed, 0.75 + j, features=joint_x)
        # S3L: a staged protocol and its equal-FLOPs full-resolution twin, two methods, 10% warm-up in both
        staged = variant("smoke-s3l", 2.0, [{"resolution": 16, "fraction": 0.5}, {"resolution": 32, "fraction": 0.5}])
        full = variant("smoke-full", 1.25)  # 2 * (0.5 * 16^2 + 0.5 * 32^2) = 1.25 * 32^2
        for method, b in (("simclr", 0.55), ("byol", 0.45)):
            make(root / "s3l", method, "instance", "sequential", seed, b + j, proto=staged, seconds=30.0)
            make(root / "s3l", method, "instance", "sequential", seed, b - 0.05 + j, proto=full, seconds=31.0)
        # claim 7: simsiam under data and width twins
        for (per_class, width), auc in TWINS.items():
            proto = twin(f"smoke-d{per_class}-w{int(width * 100):03d}", per_class, width)
            make(root / "twins", "simsiam", "instance", "joint", seed, 0.4 + j, auc=auc + j / 10, proto=proto)
    return root


def section(text: str, claim: str, scope: str) -> str:
    start = text.index(f"### {claim} — {scope}:")
    end = text.find("\n### ", start + 1)
    end2 = text.find("\n**Claim ", start + 1)
    ends = [e for e in (end, end2, text.find("\n## ", start + 1)) if e >= 0]
    return text[start : min(ends)] if ends else text[start:]


def verdicts(text: str) -> dict[tuple[str, str], str]:
    rows = re.findall(r"^\| (\w+) \| ([^|]+) \| \*\*([a-z ]+)\*\* \|", text, flags=re.M)
    return {(c, s.strip()): v for c, s, v in rows}


# ------------------------------------------------------------------ statistics


def test_t_quantiles_are_the_published_values():
    # two-sided 95% Student-t critical values (any table; e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2)
    for df, t in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281), (30, 2.0423), (120, 1.9799)):
        assert base.t_quantile(df) == pytest.approx(t, abs=1e-4)
    iv = base.t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3
    assert (iv.mean, iv.low, iv.high) == pytest.approx((2.0, 2 - 4.3027 / 3**0.5, 2 + 4.3027 / 3**0.5), abs=1e-4)
    assert base.t_interval([1.0]) is None


def test_four_verdicts_and_how_they_combine():
    above = base.Interval(0.05, 0.01, 0.09, 3, 0.016)
    straddles = base.Interval(0.01, -0.02, 0.04, 3, 0.012)
    below = base.Interval(-0.05, -0.09, -0.01, 3, 0.016)
    assert base.verdict(above, 0.0, above=True) == "reproduced"
    assert base.verdict(below, 0.0, above=True) == "contradicted"
    assert base.verdict(straddles, 0.0, above=True) == "inconclusive"
    assert base.verdict(above, 0.0, above=False) == "contradicted"
    assert base.verdict(None, 0.0, above=True) == "not testable"
    assert base.verdict(above, 0.02, above=True) == "inconclusive"  # the threshold, not 0, decides
    # seeds that would decide: smallest n with t(n-1) * sd / sqrt(n) < |mean - threshold|
    need = straddles.seeds_needed(0.0)
    assert base.t_quantile(need - 1) * 0.012 / need**0.5 < 0.01 <= base.t_quantile(need - 2) * 0.012 / (need - 1) ** 0.5
    assert "(about 9 seeds would decide at this spread)" in base.Check("x", straddles, 0.0, above=True).line()
    assert base.combine(["reproduced", "reproduced"]) == "reproduced"
    assert base.combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert base.combine(["reproduced", "contradicted", "inconclusive"]) == "contradicted"
    assert base.combine(["not testable", "reproduced"]) == "reproduced"
    assert base.combine(["not testable"]) == base.combine([]) == "not testable"


def test_within_method_correlation_is_spearman_with_the_method_partialled_out():
    rng = np.random.default_rng(1)
    points = [(m, f"{m}{i // 3}", float(x), float(y)) for m in "ab" for i, (x, y) in enumerate(rng.normal(size=(12, 2)))]
    one = [p for p in points if p[0] == "a"]
    assert base.within_rank_correlation(one) == pytest.approx(base.spearman([p[2] for p in one], [p[3] for p in one]))
    # independently: residuals of the within-group ranks on the group dummies, then Pearson
    rx = np.concatenate([base._ranks([p[2] for p in points if p[0] == g]) for g in "ab"])
    ry = np.concatenate([base._ranks([p[3] for p in points if p[0] == g]) for g in "ab"])
    dummies = np.repeat(np.eye(2), 12, axis=0)
    res = [v - dummies @ np.linalg.lstsq(dummies, v, rcond=None)[0] for v in (rx, ry)]
    assert base.within_rank_correlation(points) == pytest.approx(np.corrcoef(*res)[0, 1])
    assert base.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert base.spearman([1, 2, 2, 3], [3, 2, 2, 1]) == pytest.approx(-1.0)  # ties get average ranks
    iv = base.within_rank_correlation_interval(points)
    assert iv.kind == "bootstrap" and iv.low <= iv.mean <= iv.high and iv.n == 8  # 4 runs per group
    assert iv == base.within_rank_correlation_interval(points)  # deterministic
    # the vectorised bootstrap is the plain one: draw runs per group, pool their points, recompute
    rng = np.random.default_rng(0)
    runs = {g: [[p for p in points if p[1] == c] for c in sorted({p[1] for p in points if p[0] == g})] for g in "ab"}
    draws = {g: rng.integers(0, len(runs[g]), (base.BOOTSTRAP, len(runs[g]))) for g in "ab"}
    plain = [
        base.within_rank_correlation([p for g in "ab" for i in draws[g][b] for p in runs[g][i]]) for b in range(base.BOOTSTRAP)
    ]
    assert (iv.low, iv.high) == pytest.approx(tuple(np.percentile([r for r in plain if np.isfinite(r)], [2.5, 97.5])))


# ------------------------------------------------------------------ the report


def test_every_claim_reproduced_with_its_numbers(reproducing):
    text = report.render(base.collect(reproducing))
    v = verdicts(text)
    for claim in ("1", "2a", "2b", "3", "4a", "4b", "4c", "6a", "6b"):
        assert v[(claim, "smoke-v2")] == "reproduced", claim
    assert v[("5", "smoke-s3l-v2 vs smoke-full-v2")] == "reproduced"
    assert ("5", "smoke-full-v2") not in v  # claim 5 is judged per staged protocol and its twins only
    scopes7 = [s for c, s in v if c == "7"]
    assert len(scopes7) == 1 and v[("7", scopes7[0])] == "reproduced"

    one = section(text, "1", "smoke-v2")
    # mean ± std over the two seeds, in %; the gap is paired by seed (std 0, so its interval is a point)
    # the last column: the mean per seed of the sequential and joint runs' gain over random init (10% in these files)
    assert (
        "| simclr | domain | held-out probe | 2 | 60.00 ± 1.41 | 66.00 ± 1.41 | +6.00 [+6.00, +6.00] | +53.00 [+40.29, +65.71] |"
    ) in one
    assert (
        "- simclr, held-out probe: gap on instance: +1.00 [+1.00, +1.00] points (n = 2 seeds); claimed < 2.00: **reproduced**"
        in one
    )
    assert (
        "- byol, held-out probe: gap on domain - gap on class: +4.50 [+4.50, +4.50] points (n = 2 seeds); claimed > 0.00" in one
    )
    two = section(text, "2a", "smoke-v2")
    assert (
        "| simclr | domain | replay | held-out probe | 2 | 60.00 ± 1.41 | 66.00 ± 1.41 | 64.80 ± 1.41 | +6.00 [+6.00, +6.00] "
        "| +4.80 [+4.80, +4.80] | +1.20 [+1.20, +1.20] |"
    ) in two
    assert "- byol on domain, held-out probe: mas - sequential: +4.20 [+4.20, +4.20] points" in two
    assert (
        "- byol on domain, held-out probe: joint - mas: +1.80 [+1.80, +1.80] points (n = 2 seeds); claimed < 2.00: **reproduced**"
        in (section(text, "2b", "smoke-v2"))
    )
    three = section(text, "3", "smoke-v2")
    assert "| supervised | instance | 2 | 70.00 ± 1.41 | 25.00 ± 0.00 | -25.00 ± 0.00 |" in three
    assert "- instance: supervised - simclr forgetting_max: +15.00 [+15.00, +15.00] points (n = 2 seeds); claimed > 0.00" in three
    four = section(text, "4b", "smoke-v2")
    assert "| simclr | instance | 2 | 0.300 ± 0.014 | 0.390 ± 0.014 | 60.00 ± 1.41 | 61.00 ± 1.41 |" in four
    assert (
        "- simclr/instance: AUC joint - sequential: +0.090 [+0.090, +0.090] (n = 2 seeds); claimed > 0.000: **reproduced**"
        in four
    )
    c = section(text, "4c", "smoke-v2")
    assert "- simclr/instance: accuracy hybrid - sequential: +2.00 [+2.00, +2.00] points" in c
    assert "- simclr/instance: accuracy hybrid - joint: +1.00 [+1.00, +1.00] points" in c
    assert "- simclr/instance: AUC joint - hybrid: +0.060 [+0.060, +0.060]" in c
    five = section(text, "5", "smoke-s3l-v2 vs smoke-full-v2")
    assert (
        "Estimated FLOPs of smoke-full-v2 / smoke-s3l-v2: 1.00. Measured minutes per run of smoke-full-v2 / smoke-s3l-v2" in five
    )
    assert (
        "| simclr | instance | sequential | 2 | 55.00 ± 1.41 | 50.00 ± 1.41 | +5.00 [+5.00, +5.00] | 10% / 10% | 0.5 / 0.5 |"
        in five
    )
    six = section(text, "6a", "smoke-v2")
    assert re.search(r"\| simclr \| instance \| 2 \| 0\.9\d\d ± 0\.0\d\d \|", six)
    assert "| supervised | instance | 2 | 5.0000 ± 0.0141 | 50.000 ± 0.141 | — |" in section(text, "6b", "smoke-v2")
    seven = section(text, "7", scopes7[0])
    assert (
        "simsiam/instance/joint: AUC smoke-d100-w025-v2 (100 per class, x0.25) - AUC smoke-d30-w025-v2 (30 per class, x0.25)"
        in seven
    )
    assert (
        "simsiam/instance/joint: AUC smoke-d100-w025-v2 (100 per class, x0.25) - AUC smoke-d100-w050-v2 (100 per class, x0.5)"
        in seven
    )
    # compute from the files' attributes: 2 methods x 2 protocols x 2 seeds of 30 and 31 s for claim 5
    assert "| 5 | smoke-s3l-v2 vs smoke-full-v2 | **reproduced** | 8 | 8 runs on cpu: test x2, 4.1 min |" in text


def test_the_pooled_correlation_does_not_decide_claim_4a(tmp_path):
    """Issue 33: pooled over methods rho is below -0.5 because one method is better and less collapsed than the
    other; within each method the more collapsed phases and runs are the *more* accurate ones: contradicted."""
    for seed in (0, 1, 2):
        for method, level, auc0 in (("simclr", 0.5, 0.3), ("byol", 0.3, 0.8)):
            for strategy, step in (("sequential", 0.0), ("joint", 0.02)):
                final = level + step + 0.01 * seed
                make(tmp_path, method, "instance", strategy, seed, final, auc=auc0 + step + 0.005 * seed, auc_slope=-1.0)
    runs = [r for r in base.collect(tmp_path) if "collapse_auc" in r.numbers]
    pooled = base.spearman([r.numbers["collapse_auc"] for r in runs], [r.numbers["final_avg_acc"] for r in runs])
    assert pooled < -0.5
    text = report.render(base.collect(tmp_path))
    assert verdicts(text)[("4a", "smoke-v2")] == "contradicted"
    four = section(text, "4a", "smoke-v2")
    assert f"- instance: pooled over methods (final phase, decides nothing) rho = {pooled:.3f} over 12 runs" in four
    assert "within-method rank correlation of collapse AUC and accuracy (byol, simclr): +" in four


def test_collapse_is_correlated_with_accuracy_within_a_stream_not_across_streams(tmp_path):
    """Two streams whose probes differ in difficulty: pooled, AUC and accuracy fall together (rho < 0), but within
    each stream the more collapsed runs are the more accurate ones, so claim 4a does not hold."""
    for seed in SEEDS:
        for method, shift in (("simclr", 0.0), ("byol", 0.02)):
            for stream, acc0, auc0 in (("instance", 0.40, 0.9), ("class", 0.60, 0.7)):
                for strategy, step in (("sequential", 0.0), ("joint", 0.01)):
                    up = shift + step + 0.001 * seed
                    make(tmp_path, method, stream, strategy, seed, acc0 + up, auc=auc0 + up, auc_slope=-1.0)
    runs = [r for r in base.collect(tmp_path) if "collapse_auc" in r.numbers]
    pooled = base.spearman([r.numbers["collapse_auc"] for r in runs], [r.numbers["final_avg_acc"] for r in runs])
    assert pooled < -0.5  # what pooling across streams would have reported
    text = report.render(base.collect(tmp_path))
    assert verdicts(text)[("4a", "smoke-v2")] == "contradicted"
    four = section(text, "4a", "smoke-v2")
    assert "- instance: pooled over methods (final phase, decides nothing) rho = 1.000 over 8 runs" in four
    assert "- class: pooled over methods (final phase, decides nothing) rho = 1.000 over 8 runs" in four


def test_a_method_that_does_not_learn_makes_the_claim_not_testable(tmp_path):
    """BYOL's final accuracy equals its random init's: claim 1 needs a non-contrastive method that learned."""
    for seed in (0, 1, 2):
        j = 0.01 * seed
        for stream, gap in GAP.items():
            make(tmp_path, "simclr", stream, "sequential", seed, 0.6 + j)
            make(tmp_path, "simclr", stream, "joint", seed, 0.6 + gap + j)
            make(tmp_path, "byol", stream, "sequential", seed, 0.1 + j, init=0.1 + j)  # no gain
            make(tmp_path, "byol", stream, "joint", seed, 0.1 + j, init=0.1 + j)
    text = report.render(base.collect(tmp_path))
    assert verdicts(text)[("1", "smoke-v2")] == "not testable"
    one = section(text, "1", "smoke-v2")
    assert "Not testable: byol does not learn on the instance stream at this budget (gain over random init +0.00 [" in one
    assert "no non-contrastive method learns on every stream (byol)" in one
    assert "- simclr, held-out probe: gap on instance: +1.00" in one  # the method that learned is still shown


def test_a_noisy_difference_is_inconclusive_and_says_how_many_seeds_would_decide(tmp_path):
    noise = {0: 0.0, 1: 0.02, 2: -0.015}
    for seed in (0, 1, 2):
        for stream, gap in GAP.items():
            for method in ("simclr", "byol"):
                b = BASE[method]
                make(tmp_path, method, stream, "sequential", seed, b)
                make(tmp_path, method, stream, "joint", seed, b + gap + noise[seed])
    one = section(report.render(base.collect(tmp_path)), "1", "smoke-v2")
    assert "### 1 — smoke-v2: inconclusive" in one
    assert re.search(
        r"gap on instance: \+1\.17 \[-3\.\d\d, \+5\.\d\d\] points \(n = 3 seeds\); claimed < 2\.00: \*\*inconclusive\*\* "
        r"\(about \d+ seeds would decide at this spread\)",
        one,
    )


def test_claim_3_needs_a_supervised_reference_that_forgets(tmp_path):
    """Supervised training that does not forget (forgetting_max below 0) makes claim 3 not testable, not refuted."""
    for seed in SEEDS:
        j = JITTER[seed]
        make(tmp_path, "supervised", "instance", "sequential", seed, 0.7 + j, peak=0.69 + j)
        make(tmp_path, "simclr", "instance", "sequential", seed, 0.6 + j, peak=0.65 + j)
    text = report.render(base.collect(tmp_path))
    assert verdicts(text)[("3", "smoke-v2")] == "not testable"
    assert "supervised training does not forget on the instance stream (forgetting_max -1.00 [-1.00, -1.00]" in text


def test_a_claim_that_does_not_hold_is_contradicted(tmp_path):
    """Supervised forgets less than SSL, and sequential is far behind joint on the instance stream."""
    for seed in SEEDS:
        j = JITTER[seed]
        make(tmp_path, "supervised", "class", "sequential", seed, 0.7 + j, peak=0.72 + j)
        make(tmp_path, "simclr", "class", "sequential", seed, 0.6 + j, peak=0.8 + j)
        make(tmp_path, "byol", "class", "sequential", seed, 0.5 + j, peak=0.51 + j)
        for method, b in (("simclr", 0.6), ("byol", 0.5)):
            make(tmp_path, method, "class", "joint", seed, b + 0.01 + j)
            for stream, gap in {"instance": 0.08, "distant": 0.05, "domain": 0.06}.items():
                make(tmp_path, method, stream, "sequential", seed, b + j)
                make(tmp_path, method, stream, "joint", seed, b + gap + j)
    text = report.render(base.collect(tmp_path))
    v = verdicts(text)
    assert v[("3", "smoke-v2")] == "contradicted"
    three = section(text, "3", "smoke-v2")
    assert "- class: supervised - simclr forgetting_max: -18.00 [-18.00, -18.00] points (n = 2 seeds); claimed > 0.00" in three
    assert "forgetting_max: -18.00 [-18.00, -18.00] points (n = 2 seeds); claimed > 0.00: **contradicted**" in three
    assert "- class: supervised - byol forgetting_max: +1.00 [+1.00, +1.00] points" in text
    assert v[("1", "smoke-v2")] == "contradicted"
    assert (
        "- simclr, held-out probe: gap on instance: +8.00 [+8.00, +8.00] points (n = 2 seeds); claimed < 2.00: **contradicted**"
        in text
    )


def test_claim_2_weak_and_strong_forms(tmp_path):
    """Replay gains over sequential (the weak form holds) but stays far below joint (the strong form does not)."""
    for seed in SEEDS:
        j = JITTER[seed]
        for method, b in (("simclr", 0.6), ("byol", 0.5)):
            make(tmp_path, method, "distant", "sequential", seed, b + j)
            make(tmp_path, method, "distant", "joint", seed, b + 0.10 + j)
            make(tmp_path, method, "distant", "replay", seed, b + 0.03 + j)
            make(tmp_path, method, "distant", "mas", seed, b + 0.02 + j)
    v = verdicts(report.render(base.collect(tmp_path)))
    assert v[("2a", "smoke-v2")] == "reproduced"
    assert v[("2b", "smoke-v2")] == "contradicted"


def test_claim_5_needs_two_methods_a_margin_and_the_same_warmup_share(tmp_path):
    staged = variant("smoke-s3l", 2.0, [{"resolution": 16, "fraction": 0.5}, {"resolution": 32, "fraction": 0.5}])
    full = variant("smoke-full", 1.25)
    cases = {
        "one": {"simclr": (0.05, 0.1)},  # one method only
        "warmup": {"simclr": (0.05, 0.31), "byol": (0.05, 0.31)},  # 10% vs 31% of each phase
        "margin": {"simclr": (0.005, 0.1), "byol": (0.005, 0.1)},  # staged ahead by half a point, no noise
        # one recipe (0.2 warm-up epochs: 10% of smoke-s3l's 2, 16% of smoke-full's 1.25 epochs), which smoke-full's
        # train.warmup_scale = 1.25 / 2 brings back to 10% of its phases
        "scaled": {"simclr": (0.05, 0.16), "byol": (0.05, 0.16)},
    }
    scaled = full.model_dump(mode="json")
    scaled["train"]["warmup_scale"] = 1.25 / 2
    for case, methods in cases.items():
        for seed in SEEDS:
            for method, (ahead, share) in methods.items():
                stored = {"proto_json": scaled} if case == "scaled" else {}
                make(tmp_path / case, method, "instance", "sequential", seed, 0.5 + ahead + JITTER[seed], proto=staged)
                make(
                    tmp_path / case,
                    method,
                    "instance",
                    "sequential",
                    seed,
                    0.5 + JITTER[seed],
                    proto=full,
                    warmup=share,
                    **stored,
                )
    pair = "smoke-s3l-v2 vs smoke-full-v2"
    one = report.render(base.collect(tmp_path / "one"))
    assert verdicts(one)[("5", pair)] == "not testable" and "1 method(s) take part (simclr); the rule needs 2" in one
    warm = report.render(base.collect(tmp_path / "warmup"))
    assert verdicts(warm)[("5", pair)] == "not testable"
    assert (
        "simclr/instance/sequential: the warm-up takes 10% of each phase under smoke-s3l-v2 but 31% under smoke-full-v2" in warm
    )
    assert verdicts(report.render(base.collect(tmp_path / "margin")))[("5", pair)] == "contradicted"
    assert verdicts(report.render(base.collect(tmp_path / "scaled")))[("5", pair)] == "reproduced"


def test_claim_4c_judges_accuracy_against_sequential_and_joint(tmp_path):
    """The hybrid collapses less than joint but is less accurate than plain sequential training: contradicted."""
    for seed in SEEDS:
        j = JITTER[seed]
        make(tmp_path, "simclr", "instance", "sequential", seed, 0.62 + j, auc=0.3)
        make(tmp_path, "simclr", "instance", "joint", seed, 0.58 + j, auc=0.5)
        make(tmp_path, "simclr", "instance", "hybrid", seed, 0.60 + j, auc=0.4)
    text = report.render(base.collect(tmp_path))
    assert verdicts(text)[("4c", "smoke-v2")] == "contradicted"
    c = section(text, "4c", "smoke-v2")
    assert "AUC joint - hybrid: +0.100 [+0.100, +0.100] (n = 2 seeds); claimed > 0.000: **reproduced**" in c
    assert "accuracy hybrid - sequential: -2.00 [-2.00, -2.00] points (n = 2 seeds); claimed > 0.00: **contradicted**" in c


def test_claim_6b_needs_a_comparable_sharpness_and_a_saddle_is_never_flat(tmp_path):
    for seed in SEEDS:
        j = JITTER[seed]
        # v1 files: the own-loss, largest-magnitude eigenvalue only (SSL's saddle would have looked flatter)
        make(tmp_path / "v1", "supervised", "instance", "sequential", seed, 0.7 + j, peak=0.95, sharpness=4.2 + j)
        make(tmp_path / "v1", "simclr", "instance", "sequential", seed, 0.6 + j, sharpness=-7.0 + j)
        # v2 files: the probe's eigenvalue, negative for SSL (a saddle or a failed power iteration)
        for folder, ssl in (("saddle", -3.0), ("flat", 1.0)):
            make(tmp_path / folder, "supervised", "instance", "sequential", seed, 0.7 + j, peak=0.95, probe_sharpness=5.0 + j)
            make(tmp_path / folder, "simclr", "instance", "sequential", seed, 0.6 + j, probe_sharpness=ssl + j)
    v1 = report.render(base.collect(tmp_path / "v1"))
    assert verdicts(v1)[("6b", "smoke-v2")] == "not testable"
    assert "no comparable sharpness in simclr/instance, supervised/instance" in v1
    saddle = report.render(base.collect(tmp_path / "saddle"))
    assert verdicts(saddle)[("6b", "smoke-v2")] == "not testable"
    assert "simclr/instance: 2 run(s) with a probe top eigenvalue at or below 0 (a saddle" in saddle
    assert verdicts(report.render(base.collect(tmp_path / "flat")))[("6b", "smoke-v2")] == "reproduced"


def test_downstream_accuracy_is_judged_as_well(tmp_path):
    """Held-out accuracy reproduces claim 1, but downstream transfer shows a 5-point gap on the instance stream."""
    for seed in SEEDS:
        j = JITTER[seed]
        for method, b in (("simclr", 0.6), ("byol", 0.5)):
            for stream, gap in GAP.items():
                few = {"pacs/acc_5shot": 0.4 + j, "pacs/acc_5shot_photo": 0.5 + j, "pacs/ci95_5shot": 0.01}
                make(tmp_path, method, stream, "sequential", seed, b + j, downstream={"pacs-photo": 0.3 + j} | few)
                late = 0.05 if stream == "instance" else gap
                few = {"pacs/acc_5shot": 0.4 + gap + j, "pacs/acc_5shot_photo": 0.5 + j, "pacs/ci95_5shot": 0.01}
                make(tmp_path, method, stream, "joint", seed, b + gap + j, downstream={"pacs-photo": 0.3 + late + j} | few)
    text = report.render(base.collect(tmp_path))
    assert verdicts(text)[("1", "smoke-v2")] == "contradicted"
    one = section(text, "1", "smoke-v2")
    assert (
        "- simclr, held-out probe: gap on instance: +1.00 [+1.00, +1.00] points (n = 2 seeds); claimed < 2.00: **reproduced**"
        in one
    )
    assert "- simclr, downstream pacs-photo/acc: gap on instance: +5.00 [+5.00, +5.00] points" in one
    assert "| simclr | instance | downstream pacs-photo/acc | 2 | 30.00 ± 1.41 | 35.00 ± 1.41 |" in one
    # the few-shot mean over domains is judged; its per-domain parts and intervals are not
    assert "- simclr, downstream pacs/acc_5shot: gap on instance: +1.00 [+1.00, +1.00] points" in one
    assert "acc_5shot_photo" not in one and "ci95" not in one


def test_the_domain_stream_comes_from_the_protocol_named_domain_protocol(tmp_path):
    """v2: the base protocol names its natural-domain protocol; claims 1 and 2 take the domain runs from it."""
    d = SMOKE.model_dump(mode="json")
    d["name"], d["defaults"]["stream"] = "smoke-pacs", "domain"
    d["dataset"]["name"] = "multidomain"
    pacs = protocols.Protocol.model_validate(d)
    named = SMOKE.model_dump(mode="json") | {"domain_protocol": "smoke-pacs"}
    for seed in SEEDS:
        j = JITTER[seed]
        for method, b in (("simclr", 0.6), ("byol", 0.5)):
            for stream, gap in GAP.items():  # pacs-cpu has no downstream evaluator; the others transfer to PACS
                kw = {"proto": pacs} if stream == "domain" else {"proto_json": named}
                down = {} if stream == "domain" else {"pacs-photo": 0.3 + j}
                make(tmp_path, method, stream, "sequential", seed, b + j, downstream=down, **kw)
                down = {} if stream == "domain" else {"pacs-photo": 0.3 + gap + j}
                make(tmp_path, method, stream, "joint", seed, b + gap + j, downstream=down, **kw)
    text = report.render(base.collect(tmp_path))
    v = verdicts(text)
    assert v[("1", "smoke-v2")] == "reproduced"
    assert ("1", "smoke-pacs-v2") not in v  # judged with the protocol that names it
    one = section(text, "1", "smoke-v2")
    assert "The domain stream runs under smoke-pacs-v2 (natural domains, named by `domain_protocol`)." in one
    assert "| simclr | domain (smoke-pacs-v2) | held-out probe | 2 | 60.00 ± 1.41 | 66.00 ± 1.41 | +6.00 [+6.00, +6.00] |" in one
    # downstream transfer where every run compared has it; the domain stream's runs are compared held-out only
    assert "- byol, downstream pacs-photo/acc: gap on distant - gap on class: +3.50 [+3.50, +3.50] points" in one
    assert "- byol, held-out probe: gap on domain - gap on class: +4.50" in one
    assert "downstream pacs-photo/acc: gap on domain" not in one


def test_claim_7_collapse_against_data_and_width(tmp_path):
    for seed in (0, 1, 2):
        for (per_class, width), auc in TWINS.items():
            proto = twin(f"smoke-d{per_class}-w{int(width * 100):03d}", per_class, width)
            stored = proto.model_dump(mode="json")  # the smaller data trains more epochs, with a longer warm-up
            stored["train"] |= {"epochs_per_experience": 200 / per_class, "warmup_scale": 100 / per_class}
            # the wider model collapses *more* here: contradicted
            auc = 0.8 if width == 0.5 else auc
            seeded = {"auc": auc + 0.001 * seed, "proto": proto, "proto_json": stored}
            make(tmp_path, "simsiam", "instance", "joint", seed, 0.4 + 0.01 * seed, **seeded)
            make(tmp_path, "simclr", "instance", "joint", seed, 0.4, auc=0.1, proto=proto, proto_json=stored)  # not judged
    text = report.render(base.collect(tmp_path))
    [(scope, verdict)] = [(s, x) for (c, s), x in verdicts(text).items() if c == "7"]
    assert verdict == "contradicted"
    seven = section(text, "7", scope)
    assert "AUC smoke-d100-w025-v2 (100 per class, x0.25) - AUC smoke-d100-w050-v2 (100 per class, x0.5): -0.100" in seven
    assert "AUC smoke-d30-w025-v2 (30 per class, x0.25) - AUC smoke-d10-w025-v2 (10 per class, x0.25): +0.100" in seven
    assert "simclr" not in seven.split("\n\n", 2)[-1].split("Compute:")[0].replace("| simclr", "")  # rows: simsiam only
    alone = report.render(base.collect(tmp_path / ".." / tmp_path.name))
    assert alone == text


def test_claim_7_pairs_only_twins_that_train_as_many_steps(tmp_path):
    """A twin with 4x the steps is another budget, not a data twin: it sorts between smoke-d30 and smoke-d100 and
    was paired with smoke-d30, its AUC (0.1) contradicting the claim that the data twins reproduce."""
    d = twin("smoke-d100-w025-steps4", 100, 0.25).model_dump(mode="json")
    d["train"]["epochs_per_experience"] *= 4
    longer = protocols.Protocol.model_validate(d)
    for seed in (0, 1, 2):
        for (per_class, width), auc in TWINS.items():
            proto = twin(f"smoke-d{per_class}-w{int(width * 100):03d}", per_class, width)
            make(tmp_path, "simsiam", "instance", "joint", seed, 0.4 + 0.01 * seed, auc=auc + 0.001 * seed, proto=proto)
        make(tmp_path, "simsiam", "instance", "joint", seed, 0.4, auc=0.1 + 0.001 * seed, proto=longer, steps=400)
    text = report.render(base.collect(tmp_path))
    [(scope, verdict)] = [(s, x) for (c, s), x in verdicts(text).items() if c == "7"]
    assert "smoke-d100-w025-steps4-v2" not in scope and verdict == "reproduced"  # not a twin: not in the family
    seven = section(text, "7", scope)
    assert "AUC smoke-d100-w025-v2 (100 per class, x0.25) - AUC smoke-d30-w025-v2 (30 per class, x0.25): +0.100" in seven
    assert "- AUC smoke-d30" not in seven.replace("AUC smoke-d100-w025-v2 (100 per class, x0.25) - AUC smoke-d30", "")
    assert "steps4" not in seven


def test_claim_7_names_each_configuration_that_does_not_learn_once(tmp_path):
    for seed in (0, 1, 2):
        for per_class in (10, 30, 100):
            proto = twin(f"smoke-d{per_class}-w025", per_class, 0.25)
            make(tmp_path, "simsiam", "instance", "joint", seed, 0.1 + 0.001 * seed, auc=0.5 + per_class / 1000, proto=proto)
    text = report.render(base.collect(tmp_path))
    [(scope, verdict)] = [(s, x) for (c, s), x in verdicts(text).items() if c == "7"]
    assert verdict == "not testable"
    why = section(text, "7", scope).split("Not testable: ")[1].split("\n")[0]
    for per_class in (10, 30, 100):  # d30 takes part in two pairs: named once
        assert why.count(f"simsiam does not learn on smoke-d{per_class}-w025-v2 at this budget") == 1


def test_the_learning_table_gives_every_configuration_its_gain_and_steps(tmp_path):
    """The precondition as a table: a budget twin's longer runs show beside the base's (a budget curve)."""
    longer = variant("smoke-steps4", 4 * SMOKE.train.epochs_per_experience)
    for seed in (0, 1, 2):
        make(tmp_path, "byol", "instance", "joint", seed, 0.105 + 0.002 * seed)  # init 0.1: +0.7 points
        make(tmp_path, "byol", "instance", "joint", seed, 0.14 + 0.01 * seed, proto=longer, steps=400)
    make(tmp_path, "simclr", "instance", "joint", 0, 0.3)  # one seed: no interval
    lines = report.render(base.collect(tmp_path)).split("## Does each method learn?")[1].split("\n## ")[0]
    assert "| smoke-steps4-v2 | byol | instance | joint | 400 | 3 | 15.00 ± 1.00 | +5.00 [+2.52, +7.48] | yes |" in lines
    assert "| smoke-v2 | byol | instance | joint | 100 | 3 | 10.70 ± 0.20 | +0.70 [+0.20, +1.20] | no |" in lines
    assert "| smoke-v2 | simclr | instance | joint | 100 | 1 | 30.00 | +20.00 | - |" in lines


def test_missing_runs_make_a_claim_not_testable_and_are_named(tmp_path):
    for seed in SEEDS:
        make(tmp_path, "simclr", "instance", "sequential", seed, 0.6, seconds=120.0)
        make(tmp_path, "simclr", "instance", "joint", seed, 0.61, seconds=120.0)
    make(tmp_path, "simclr", "class", "sequential", 0, 0.6, seconds=120.0)  # one seed: not enough
    text = report.render(base.collect(tmp_path))
    v = verdicts(text)
    assert set(v.values()) == {"not testable"}
    one = section(text, "1", "smoke-v2")
    assert (
        "a contrastive method on all four streams, e.g. simclr: simclr/class/sequential "
        "(1 of 3 seeds), simclr/class/joint (0 of 3 seeds), simclr/distant/sequential (0 of 3 seeds)"
    ) in one
    assert "a non-contrastive method on all four streams, e.g. byol: byol/instance/sequential" in one
    assert "byol/domain/joint (0 of 3 seeds)." in one
    # 2 + 3 for simclr's class, 2 x 2 x 3 for distant and domain, 4 x 2 x 3 for byol: at the median 2 min per run
    assert "To test it: about 41 more runs, about 82 min at this protocol's median 2.0 min per run (cpu: test x2)." in one
    assert "Missing: runs under a protocol with train.stages (S3L)" in text
    assert "supervised" in section(text, "3", "smoke-v2")


def test_s3l_without_an_equal_compute_twin_says_what_would_match(tmp_path):
    staged = variant("smoke-s3l", 2.0, [{"resolution": 16, "fraction": 0.5}, {"resolution": 32, "fraction": 0.5}])
    for seed in SEEDS:
        make(tmp_path, "simclr", "instance", "sequential", seed, 0.55, proto=staged)
        make(tmp_path, "simclr", "instance", "sequential", seed, 0.50)  # smoke: 2 epochs at 32 px, 1.6x the FLOPs
    text = section(report.render(base.collect(tmp_path)), "5", "smoke-s3l-v2")
    assert "not testable" in text and "epochs_per_experience = 1.25" in text and "smoke-v2 has 1.60x the FLOPs" in text


def test_bad_input_is_one_line_and_unreadable_files_are_skipped(tmp_path, caplog, capsys):
    with pytest.raises(UserError, match="does not exist"):
        base.collect(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no result files" in capsys.readouterr().err
    (tmp_path / "empty" / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="none of the 1 .h5 files"):
        base.collect(tmp_path / "empty")
    make(tmp_path / "empty", "simclr", "instance", "sequential", 0, 0.6)
    runs = base.collect(tmp_path / "empty")
    assert len(runs) == 1 and "broken.h5" in caplog.text


def test_two_renders_are_byte_identical_figures_included(reproducing, tmp_path):
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["report", str(reproducing), "-o", str(out / "FINDINGS.md"), "--figures", str(out / "figures")]) == 0
        outputs.append(out)
    a, b = outputs
    text = (a / "FINDINGS.md").read_text()
    pngs = sorted(p.name for p in (a / "figures").iterdir())
    assert "claim1_gap__smoke-v2.png" in pngs and "claim4_collapse__smoke-v2.png" in pngs
    assert all(f"](figures/{p})" in text for p in pngs)
    assert (a / "FINDINGS.md").read_bytes() == (b / "FINDINGS.md").read_bytes()
    for p in pngs:
        data = (a / "figures" / p).read_bytes()
        assert data == (b / "figures" / p).read_bytes() and data.startswith(b"\x89PNG")
        assert b"tIME" not in data and b"Software" not in data
    assert str(tmp_path) not in text  # no absolute paths


def test_domains_made_from_transforms_are_named(tmp_path):
    d = SMOKE.model_dump(mode="json")
    d["name"], d["dataset"]["options"] = "smoke-domains", {"transform_domains": True}
    proto = protocols.Protocol.model_validate(d)
    make(tmp_path, "simclr", "domain", "sequential", 0, 0.5, proto=proto)
    text = section(report.render(base.collect(tmp_path)), "1", "smoke-domains-v2")
    assert "made from image transforms (photo, grayscale, edges, cartoon; dataset option `transform_domains`" in text


def test_the_domain_stream_comes_from_the_domain_twin_protocol(tmp_path):
    """Data without domains: claims 1 and 2 take the domain runs from the same protocol with transform domains."""
    d = SMOKE.model_dump(mode="json")
    d["name"], d["defaults"]["stream"] = "smoke-domains", "domain"
    d["dataset"]["options"]["transform_domains"] = True
    twin_proto = protocols.Protocol.model_validate(d)
    other = variant("smoke-other", 3.0)  # differs in more than the domains: not a twin
    for seed in SEEDS:
        j = JITTER[seed]
        for method, b in (("simclr", 0.6), ("byol", 0.5)):
            for stream, gap in GAP.items():
                proto = twin_proto if stream == "domain" else SMOKE
                make(tmp_path, method, stream, "sequential", seed, b + j, proto=proto)
                make(tmp_path, method, stream, "joint", seed, b + gap + j, proto=proto)
            for strategy, frac in (("replay", 0.8), ("mas", 0.7)):
                make(tmp_path, method, "domain", strategy, seed, b + j + frac * GAP["domain"], proto=twin_proto)
        make(tmp_path, "simclr", "domain", "sequential", seed, 0.1, proto=other)
        make(tmp_path, "simclr", "domain", "joint", seed, 0.9, proto=other)
    assert base.domain_twins({p.label: p.model_dump(mode="json") for p in (SMOKE, twin_proto, other)}) == {
        "smoke-v2": "smoke-domains-v2"
    }
    text = report.render(base.collect(tmp_path))
    v = verdicts(text)
    assert v[("1", "smoke-v2")] == "reproduced" and v[("2a", "smoke-v2")] == "reproduced"
    assert v[("2b", "smoke-v2")] == "reproduced"
    assert ("1", "smoke-domains-v2") not in v and ("2a", "smoke-domains-v2") not in v  # judged with its base
    assert v[("1", "smoke-other-v2")] == "not testable"  # no twin: its own domain runs only
    one = section(text, "1", "smoke-v2")
    assert (
        "| simclr | domain (smoke-domains-v2) | held-out probe | 2 | 60.00 ± 1.41 | 66.00 ± 1.41 | +6.00 [+6.00, +6.00] |" in one
    )
    assert "domain stream's data (it runs under smoke-domains-v2) are made from image transforms" in one
    two = section(text, "2a", "smoke-v2")
    assert (
        "| byol | domain (smoke-domains-v2) | replay | held-out probe | 2 | 50.00 ± 1.41 | 56.00 ± 1.41 | 54.80 ± 1.41 |" in two
    )


def test_a_missing_domain_stream_is_asked_of_the_shipped_domain_twin(tmp_path):
    cpu, twin_proto = protocols.load_shipped("tinyimagenet-cpu", 1), protocols.load_shipped("tinyimagenet-cpu-domains", 1)
    for seed in SEEDS:
        make(tmp_path / "a", "simclr", "instance", "sequential", seed, 0.1, proto=cpu)
        make(tmp_path / "b", "simclr", "domain", "sequential", seed, 0.1, proto=twin_proto)
    one = section(report.render(base.collect(tmp_path / "a")), "1", "tinyimagenet-cpu-v1")
    assert "simclr/domain/sequential under tinyimagenet-cpu-domains-v1 (0 of 3 seeds)" in one
    assert "simclr/class/sequential (0 of 3 seeds)" in one
    v = verdicts(report.render(base.collect(tmp_path / "b")))  # the twin alone is judged on its own
    assert v[("1", "tinyimagenet-cpu-domains-v1")] == "not testable"


def test_the_committed_findings_are_regenerated_byte_for_byte(tmp_path):
    """benchmark/FINDINGS.md and the figures it links (benchmark/findings/) are what the command makes."""
    root = Path(__file__).resolve().parents[1]
    committed = root / "benchmark" / "FINDINGS.md"
    if not (root / "leaderboard" / "results").is_dir() or not committed.exists():
        pytest.skip("no leaderboard/results or benchmark/FINDINGS.md in this checkout")
    # the same layout as the committed one, so the figure links come out the same
    text = report.report(root / "leaderboard" / "results", tmp_path / "FINDINGS.md", tmp_path / "findings")
    rerun = "rerun: ssl-bench report leaderboard/results -o benchmark/FINDINGS.md --figures benchmark/findings"
    assert committed.read_text(encoding="utf-8") == text, rerun
    linked = sorted(re.findall(r"\]\(findings/([^)]+\.png)\)", text))
    assert linked == sorted(p.name for p in (tmp_path / "findings").iterdir())
    assert linked == sorted(p.name for p in (root / "benchmark" / "findings").glob("*.png")), rerun
