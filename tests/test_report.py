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
    proto=SMOKE,
    features=None,
    sharpness=None,
    seconds=60.0,
    device="cpu: test x2",
):
    acc, plan = matrix(strategy, final, final + 0.05 if peak is None else peak)
    arrays = {
        "metrics/acc_matrix": acc,
        "metrics/acc_init": np.full(T, 0.1),
        "phases/experiences": json.dumps(plan),
        "protocol_json": json.dumps(proto.model_dump(mode="json"), sort_keys=True),
        "config": "{}",
    }
    if auc is not None:
        arrays["metrics/collapse/auc"] = np.full(len(plan), auc)
    if features is not None:
        arrays["metrics/cka/features"] = np.stack([features] * len(plan)).astype(np.float16)
        arrays["metrics/cka/index"] = np.stack([np.arange(len(features))] * len(plan))
    if sharpness is not None:
        arrays["end/sharpness/top_eigenvalue"] = np.float64(sharpness)
        arrays["end/sharpness/hessian_trace"] = np.float64(10 * sharpness)
    attrs = {
        "protocol": proto.name,
        "protocol_version": proto.version,
        "protocol_hash": proto.hash,
        "method": method,
        "stream": stream,
        "strategy": strategy,
        "seed": seed,
        "device": device,
        "seconds": seconds,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / results.result_name(proto.label, method, stream, strategy, seed)
    return results.write(path, attrs, arrays, {"summary": {"final_avg_acc": 0.99}})  # a lie the report must ignore


def auc_of(method, strategy, final):
    """Collapse AUC falling with accuracy, joint more collapsed than sequential, hybrid in between."""
    return 0.9 - final + {"joint": 0.1, "hybrid": 0.05}.get(strategy, 0.0)


@pytest.fixture(scope="module")
def reproducing(tmp_path_factory):
    """Files under which every claim is reproduced."""
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
                            "sharpness": 1.0 + j if strategy == "sequential" else None,
                        }
                    make(root, method, stream, strategy, seed, final, auc=auc_of(method, strategy, final), **extra)
            seq, joint = b + j, b + GAP["domain"] + j  # replay closes half of the domain gap, mas 30%
            for strategy, frac in (("replay", 0.5), ("mas", 0.3)):
                make(root, method, "domain", strategy, seed, seq + frac * (joint - seq))
            make(root, method, "instance", "hybrid", seed, b + j, auc=auc_of(method, "hybrid", b + j))
        make(
            root,
            "supervised",
            "instance",
            "sequential",
            seed,
            0.7 + j,
            peak=0.95 + j,
            sharpness=5.0 + j,
            features=rng.normal(size=(64, 8)),
        )
        make(root, "supervised", "instance", "joint", seed, 0.75 + j, features=joint_x)
        # S3L: a staged protocol and its equal-FLOPs full-resolution twin
        staged = variant("smoke-s3l", 2.0, [{"resolution": 16, "fraction": 0.5}, {"resolution": 32, "fraction": 0.5}])
        full = variant("smoke-full", 1.25)  # 2 * (0.5 * 16^2 + 0.5 * 32^2) = 1.25 * 32^2
        make(root / "s3l", "simclr", "instance", "sequential", seed, 0.55 + j, proto=staged, seconds=30.0)
        make(root / "s3l", "simclr", "instance", "sequential", seed, 0.50 + j, proto=full, seconds=31.0)
    return root


def section(text: str, claim: str, scope: str) -> str:
    start = text.index(f"### {claim} — {scope}:")
    end = text.find("\n### ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def verdicts(text: str) -> dict[tuple[str, str], str]:
    rows = re.findall(r"^\| (\w+) \| ([^|]+) \| \*\*([a-z ]+)\*\* \|", text, flags=re.M)
    return {(c, s.strip()): v for c, s, v in rows}


def test_every_claim_reproduced_with_its_numbers(reproducing):
    text = report.render(base.collect(reproducing))
    v = verdicts(text)
    assert v[("1", "smoke-v2")] == "reproduced"
    for claim in ("2", "3", "4a", "4b", "4c", "6a", "6b"):
        assert v[(claim, "smoke-v2")] == "reproduced", claim
    assert v[("5", "smoke-s3l-v2 vs smoke-full-v2")] == "reproduced"
    assert ("5", "smoke-full-v2") not in v  # claim 5 is judged per staged protocol and its twins only

    one = section(text, "1", "smoke-v2")
    # mean ± std over the two seeds, in %; the gap is paired by seed, so its std is 0
    # the last column: the sequential run's final accuracy minus its random init's (10% in these files)
    assert "| simclr | domain | 2 | 60.00 ± 1.41 | 66.00 ± 1.41 | 6.00 ± 0.00 | 50.00 ± 1.41 |" in one
    assert "| byol | instance | 2 | 50.00 ± 1.41 | 51.00 ± 1.41 | 1.00 ± 0.00 | 40.00 ± 1.41 |" in one
    assert "- simclr: instance 1.00, class 1.50 <= 2.00: yes; distant 5.00, domain 6.00 > 2.50: yes" in one
    two = section(text, "2", "smoke-v2")
    # the gap to joint and the strategy's gain over sequential are paired by seed, as claim 1's gap
    assert "| simclr | domain | replay | 2 | 60.00 ± 1.41 | 66.00 ± 1.41 | 63.00 ± 1.41 | 6.00 ± 0.00 | 3.00 ± 0.00 | 0.50 |" in (
        two
    )
    assert "| byol | domain | mas | 2 | 50.00 ± 1.41 | 56.00 ± 1.41 | 51.80 ± 1.41 | 6.00 ± 0.00 | 1.80 ± 0.00 | 0.30 |" in two
    three = section(text, "3", "smoke-v2")
    assert "| supervised | instance | 2 | 70.00 ± 1.41 | 25.00 ± 0.00 | -25.00 ± 0.00 |" in three
    assert "- instance: simclr forgetting 5.00 < supervised 25.00: yes" in three
    assert "- instance: byol forgetting 5.00 < supervised 25.00: yes" in three
    four = section(text, "4b", "smoke-v2")
    assert "| simclr | instance | 2 | 0.300 ± 0.014 | 0.390 ± 0.014 | 0.090 ± 0.000 |" in four
    assert "pairs (more than half): yes" in four
    assert "AUC joint - hybrid" in section(text, "4c", "smoke-v2")
    five = section(text, "5", "smoke-s3l-v2 vs smoke-full-v2")
    assert "Estimated FLOPs of smoke-full-v2 / smoke-s3l-v2: 1.00." in five
    assert "| simclr | instance | sequential | 2 / 2 | 55.00 ± 1.41 | 50.00 ± 1.41 | 5.00 | 0.5 / 0.5 |" in five
    six = section(text, "6a", "smoke-v2")
    assert re.search(r"\| simclr \| instance \| 2 \| 0\.9\d\d ± 0\.0\d\d \|", six)
    assert "| supervised | instance | 2 | 5.0000 ± 0.0141 | 50.000 ± 0.141 | — |" in section(text, "6b", "smoke-v2")
    # compute from the files' attributes: 2 runs of 30 and 31 s for claim 5
    assert "| 5 | smoke-s3l-v2 vs smoke-full-v2 | **reproduced** | 4 | 4 runs on cpu: test x2, 2.0 min |" in text


def test_spearman_matches_an_independent_computation(reproducing):
    runs = [
        r
        for r in base.collect(reproducing)
        if r.scope == "smoke-v2" and r.attrs["method"] != "supervised" and "collapse_auc" in r.numbers
    ]
    text = section(report.render(base.collect(reproducing)), "4a", "smoke-v2")
    for stream in GAP:  # one correlation per stream
        mine = [r for r in runs if r.attrs["stream"] == stream]
        x = np.array([r.numbers["collapse_auc"] for r in mine])
        y = np.array([r.numbers["final_avg_acc"] for r in mine])
        expected = np.corrcoef(base._ranks(x), base._ranks(y))[0, 1]
        assert base.spearman(x, y) == pytest.approx(expected)
        assert f"- {stream}: Spearman rho = {expected:.3f} over {len(mine)} runs of byol, simclr" in text
    assert base.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert base.spearman([1, 2, 2, 3], [3, 2, 2, 1]) == pytest.approx(-1.0)  # ties get average ranks


def test_collapse_is_correlated_with_accuracy_within_a_stream_not_across_streams(tmp_path):
    """Two streams whose probes differ in difficulty: pooled, AUC and accuracy fall together (rho < 0), but within
    each stream the more collapsed runs are the more accurate ones, so claim 4a does not hold."""
    for seed in SEEDS:
        for method, shift in (("simclr", 0.0), ("byol", 0.02)):
            for stream, acc0, auc0 in (("instance", 0.10, 0.9), ("class", 0.30, 0.7)):
                for strategy, step in (("sequential", 0.0), ("joint", 0.01)):
                    up = shift + step + 0.001 * seed
                    make(tmp_path, method, stream, strategy, seed, acc0 + up, auc=auc0 + up)
    runs = [r for r in base.collect(tmp_path) if "collapse_auc" in r.numbers]
    pooled = base.spearman([r.numbers["collapse_auc"] for r in runs], [r.numbers["final_avg_acc"] for r in runs])
    assert pooled < -0.5  # what pooling across streams would have reported
    text = report.render(base.collect(tmp_path))
    assert verdicts(text)[("4a", "smoke-v2")] == "not reproduced"
    four = section(text, "4a", "smoke-v2")
    assert "- instance: Spearman rho = 1.000 over 8 runs of byol, simclr" in four
    assert "- class: Spearman rho = 1.000 over 8 runs of byol, simclr" in four


def test_a_claim_that_does_not_hold_is_reported_as_not_reproduced(tmp_path):
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
    assert v[("3", "smoke-v2")] == "not reproduced"
    assert "- class: simclr forgetting 20.00 < supervised 2.00: no" in text
    assert "- class: byol forgetting 1.00 < supervised 2.00: yes" in text
    assert v[("1", "smoke-v2")] == "not reproduced"
    assert "- simclr: instance 8.00, class 1.00 <= 2.00: no" in text


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
        "a contrastive method (simclr or moco) on all four streams, e.g. simclr: simclr/class/sequential "
        "(1 of 3 seeds), simclr/class/joint (0 of 3 seeds), simclr/distant/sequential (0 of 3 seeds)"
    ) in one
    assert "a non-contrastive method (byol or simsiam) on all four streams, e.g. byol: byol/instance/sequential" in one
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
    assert pngs == ["claim1_gap__smoke-v2.png", "claim3_acc_matrices__smoke-v2.png", "claim4_collapse__smoke-v2.png"]
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
    twin = protocols.Protocol.model_validate(d)
    other = variant("smoke-other", 3.0)  # differs in more than the domains: not a twin
    for seed in SEEDS:
        j = JITTER[seed]
        for method, b in (("simclr", 0.6), ("byol", 0.5)):
            for stream, gap in GAP.items():
                proto = twin if stream == "domain" else SMOKE
                make(tmp_path, method, stream, "sequential", seed, b + j, proto=proto)
                make(tmp_path, method, stream, "joint", seed, b + gap + j, proto=proto)
            for strategy, frac in (("replay", 0.5), ("mas", 0.3)):
                make(tmp_path, method, "domain", strategy, seed, b + j + frac * GAP["domain"], proto=twin)
        make(tmp_path, "simclr", "domain", "sequential", seed, 0.1, proto=other)
        make(tmp_path, "simclr", "domain", "joint", seed, 0.9, proto=other)
    assert base.domain_twins({p.label: p.model_dump(mode="json") for p in (SMOKE, twin, other)}) == {
        "smoke-v2": "smoke-domains-v2"
    }
    text = report.render(base.collect(tmp_path))
    v = verdicts(text)
    assert v[("1", "smoke-v2")] == "reproduced" and v[("2", "smoke-v2")] == "reproduced"
    assert ("1", "smoke-domains-v2") not in v and ("2", "smoke-domains-v2") not in v  # judged with its base
    assert v[("1", "smoke-other-v2")] == "not testable"  # no twin: its own domain runs only
    one = section(text, "1", "smoke-v2")
    assert "| simclr | domain (smoke-domains-v2) | 2 | 60.00 ± 1.41 | 66.00 ± 1.41 | 6.00 ± 0.00 |" in one
    assert "domain stream's data (it runs under smoke-domains-v2) are made from image transforms" in one
    two = section(text, "2", "smoke-v2")
    assert "| byol | domain (smoke-domains-v2) | replay | 2 | 50.00 ± 1.41 | 56.00 ± 1.41 | 53.00 ± 1.41 |" in two


def test_a_missing_domain_stream_is_asked_of_the_shipped_domain_twin(tmp_path):
    cpu, twin = protocols.load("tinyimagenet-cpu"), protocols.load("tinyimagenet-cpu-domains")
    for seed in SEEDS:
        make(tmp_path / "a", "simclr", "instance", "sequential", seed, 0.1, proto=cpu)
        make(tmp_path / "b", "simclr", "domain", "sequential", seed, 0.1, proto=twin)
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
