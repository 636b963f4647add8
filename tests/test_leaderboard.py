"""Leaderboard tables from handmade result files (no training), and the HTML page in a real browser."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from ssl_bench import protocol as protocols
from ssl_bench import results
from ssl_bench.cli import main
from ssl_bench.results import continual
from ssl_bench.results import tables as leaderboard

T = 4  # experiences of the smoke protocol
SMOKE_HASH = protocols.load("smoke").hash


def other_protocol():
    """The smoke protocol with another budget: same name and version, another hash."""
    smoke = protocols.load("smoke")
    return smoke.model_copy(update={"train": smoke.train.model_copy(update={"epochs_per_experience": 3.0})})


def ranked_protocol():
    """A protocol for ranking (smoke is not): smoke's settings under another name."""
    return protocols.load("smoke").model_copy(update={"name": "ranked", "ranked": True})


def make_result(
    folder: Path,
    method: str,
    stream: str,
    strategy: str,
    seed: int,
    *,
    proto=None,
    acc: np.ndarray | None = None,
    collapse: np.ndarray | None = None,
    plugins=None,
    rng=None,
    config: dict | None = None,
    identity: str | None = None,
    knn: np.ndarray | None = None,
    seconds: float | None = None,
    init: np.ndarray | None = None,
) -> Path:
    """A result file written the way the engine writes one (summary from continual.summarize), without training."""
    proto = proto or protocols.load("smoke")
    rng = rng or np.random.default_rng(zlib.crc32(f"{method}/{stream}/{strategy}/{seed}".encode()))
    joint = strategy == "joint"
    if acc is None:
        acc = rng.uniform(0.2, 0.9, size=(1 if joint else T, T))
    acc = np.asarray(acc, dtype=float)
    n_phases, n_exp = acc.shape
    arrays = {
        "metrics/acc_matrix": acc,
        "metrics/acc_init": rng.uniform(0.1, 0.2, size=n_exp) if init is None else np.asarray(init, dtype=float),
        "phases/experiences": json.dumps([list(range(n_exp))] if joint else [[i] for i in range(n_phases)]),
        "phases/names": np.array(["joint"] if joint else [f"experience {i}" for i in range(n_phases)], dtype="S"),
        "protocol_json": json.dumps(proto.model_dump(mode="json"), sort_keys=True),
        "config": json.dumps(
            {
                "method": method,
                "stream": stream,
                "strategy": strategy,
                "seed": seed,
                "plugins": [],
                "protocol": proto.model_dump(mode="json"),
                "protocol_hash": proto.hash,
                **(config or {}),
            }
        ),
    }
    if collapse is not None:
        arrays["metrics/collapse/auc"] = np.asarray(collapse, dtype=float)
    if knn is not None:
        arrays["metrics/knn/acc"] = np.asarray(knn, dtype=float)
        arrays["init/knn/acc"] = np.full(n_exp, 0.05)
    attrs = {
        "protocol": proto.name,
        "protocol_version": proto.version,
        "protocol_hash": proto.hash,
        "method": method,
        "stream": stream,
        "strategy": strategy,
        "seed": seed,
        "ssl_bench_version": "0.1.0",
        "torch_version": "test",
        "device": "cpu",
        "git_commit": "",
        "plugins": plugins or {"simclr": "0.1.0"},
        "variant": identity is not None,
        "run_identity": identity or "0" * 12,
        **({"seconds": seconds, "created": "2026-11-29T10:00:00+0000"} if seconds is not None else {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / results.result_name(f"{proto.name}-v{proto.version}", method, stream, strategy, seed, identity)
    return results.write(path, attrs, arrays, {"summary": continual.summarize(arrays)})


def rehash(path) -> None:
    """What a forger who knows the format does after editing a file: store the new content hash."""
    with h5py.File(path, "r+") as f:
        f.attrs[results.HASH_ATTR] = results.content_hash(f)


@pytest.fixture
def board(tmp_path):
    """Two protocol hashes (same name and version); under the first: simclr seq+joint (2 seeds), moco seq only."""
    rng = np.random.default_rng(0)
    made = {}
    for seed in (0, 1):
        for strategy in ("sequential", "joint"):
            made[("simclr", strategy, seed)] = make_result(
                tmp_path / "a",
                "simclr",
                "instance",
                strategy,
                seed,
                rng=rng,
                collapse=rng.uniform(0.3, 0.6, size=1 if strategy == "joint" else T),
            )
    made[("moco", "sequential", 0)] = make_result(tmp_path / "a", "moco", "instance", "sequential", 0, rng=rng)
    made[("simclr", "other", 0)] = make_result(
        tmp_path / "b", "simclr", "instance", "sequential", 0, rng=rng, proto=other_protocol()
    )
    return tmp_path, {k: results.Result(v) for k, v in made.items()}


def _row(table, method, stream, strategy):
    [row] = [r for r in table["rows"] if (r["method"], r["stream"], r["strategy"]) == (method, stream, strategy)]
    return row


def test_tables_never_mix_protocol_hashes(board):
    folder, made = board
    tables = leaderboard.build(leaderboard.collect(folder))
    other_hash = other_protocol().hash
    assert sorted(t["hash"] for t in tables) == sorted([protocols.load("smoke").hash, other_hash])
    assert all(t["ambiguous"] for t in tables)  # same name and version, different hash: flagged
    other = next(t for t in tables if t["hash"] == other_hash)
    assert [(r["method"], r["strategy"], r["seeds"]) for r in other["rows"]] == [("simclr", "sequential", [0])]
    text = leaderboard.markdown(tables)
    assert text.count("## smoke v2") == 2 and other_hash[:12] in text and protocols.load("smoke").hash in text
    assert "do not compare them" in text


def test_recipe_variants_get_rows_of_their_own(board):
    folder, made = board
    for seed in (0, 1):
        make_result(folder / "a", "simclr", "instance", "sequential", seed, identity="abcdef123456")
    [table] = [t for t in leaderboard.build(leaderboard.collect(folder)) if t["hash"] != other_protocol().hash]
    default, variant = (
        _row(table, "simclr", "instance", "sequential"),
        _row(table, "simclr (variant abcdef12)", "instance", "sequential"),
    )
    assert not default["variant"] and variant["variant"] and variant["seeds"] == [0, 1]
    assert default["files"] == [str(made[("simclr", "sequential", s)].path) for s in (0, 1)]  # not mixed with the variant
    assert variant["metrics"]["gap_to_joint"] is not None  # against the default joint row of simclr
    assert not [r for r in table["rows"] if r["method"].startswith("simclr (variant") and r["strategy"] == "joint"]
    assert "simclr (variant abcdef12)" in leaderboard.markdown([table])


def test_cells_are_mean_std_over_seeds_with_gap_and_missing_configurations(board):
    folder, made = board
    [table] = [t for t in leaderboard.build(leaderboard.collect(folder)) if t["hash"] != other_protocol().hash]
    seq, joint = _row(table, "simclr", "instance", "sequential"), _row(table, "simclr", "instance", "joint")
    finals = [made[("simclr", "sequential", s)].acc_matrix[-1].mean() for s in (0, 1)]
    assert seq["seeds"] == [0, 1]
    assert seq["metrics"]["final_avg_acc"]["mean"] == pytest.approx(np.mean(finals))
    assert seq["metrics"]["final_avg_acc"]["std"] == pytest.approx(np.std(finals, ddof=1))
    gaps = [
        made[("simclr", "joint", s)].acc_matrix[-1].mean() - made[("simclr", "sequential", s)].acc_matrix[-1].mean()
        for s in (0, 1)
    ]
    assert seq["metrics"]["gap_to_joint"]["mean"] == pytest.approx(np.mean(gaps))
    assert seq["metrics"]["forgetting_max"]["mean"] == pytest.approx(
        np.mean([made[("simclr", "sequential", s)].summary["forgetting_max"] for s in (0, 1)])
    )
    assert seq["metrics"]["collapse_auc"]["mean"] == pytest.approx(
        np.mean([made[("simclr", "sequential", s)]["metrics/collapse/auc"][-1] for s in (0, 1)])
    )
    assert joint["metrics"]["forgetting_max"] is None  # a joint run has no forgetting: "—", not 0
    assert joint["metrics"]["gap_to_joint"]["mean"] == pytest.approx(0.0)
    moco_seq = _row(table, "moco", "instance", "sequential")
    assert moco_seq["metrics"]["gap_to_joint"] is None and moco_seq["metrics"]["collapse_auc"] is None
    assert moco_seq["metrics"]["final_avg_acc"]["std"] is None  # one seed: no std
    # nobody ran moco / joint: one line under the stream's rows, not a row of "—"
    assert not [r for r in table["rows"] if (r["method"], r["strategy"]) == ("moco", "joint")]
    assert table["missing"] == {"instance": ["moco / joint"]} and all(r["seeds"] for r in table["rows"])
    # smoke is not for ranking: no ranks, rows by method and strategy
    assert not table["ranked"] and all(r["rank"] is None for r in table["rows"])
    assert [(r["method"], r["strategy"]) for r in table["rows"]] == [
        ("moco", "sequential"),
        ("simclr", "joint"),
        ("simclr", "sequential"),
    ]

    md = leaderboard.markdown([table])
    assert "Not run on instance: moco / joint." in md and "| moco | joint |" not in md
    assert "final acc % ↑" in md and "forgetting ↓" in md and "gap to joint ↓" in md and "| rank |" not in md
    shown = leaderboard.cell(leaderboard.METRICS[0], seq["metrics"]["final_avg_acc"])
    assert f"| simclr | sequential | {shown} |" in md
    assert shown == f"{np.mean(finals) * 100:.1f} ± {np.std(finals, ddof=1) * 100:.1f}"
    assert "mean ± standard deviation over the row's seeds (n = *seeds*)" in md and "95% t-interval" in md


def test_random_init_row_gain_over_init_knn_and_cost(tmp_path):
    """Does it learn, and at what cost: each stream opens with the random-init row; every row has its gain over
    the same files' init (95% interval over seeds), kNN beside the probe, minutes and device."""
    rng = np.random.default_rng(3)
    made = [
        make_result(
            tmp_path, "simclr", "instance", "sequential", s, rng=rng, knn=rng.uniform(0.1, 0.3, (T, T)), seconds=60.0 * (s + 1)
        )
        for s in (0, 1, 2)
    ]
    [table] = leaderboard.build(leaderboard.collect(tmp_path))
    runs = [results.Result(p) for p in made]
    [row] = table["rows"]
    gains = [r.acc_matrix[-1].mean() - r["metrics/acc_init"].mean() for r in runs]
    gain = row["metrics"]["gain_over_init"]
    half = 4.302653 * np.std(gains, ddof=1) / np.sqrt(3)  # t(0.975, 2 dof)
    assert gain["mean"] == pytest.approx(np.mean(gains)) and gain["n"] == 3
    assert (gain["low"], gain["high"]) == (
        pytest.approx(np.mean(gains) - half, abs=1e-6),
        pytest.approx(np.mean(gains) + half, abs=1e-6),
    )
    assert row["metrics"]["knn_acc"]["mean"] == pytest.approx(np.mean([r["metrics/knn/acc"][-1].mean() for r in runs]))
    assert row["metrics"]["minutes"]["mean"] == pytest.approx(2.0) and row["device"] == "cpu"
    assert row["cost"] == {"train_minutes": None, "eval_minutes": None}  # written before runs timed their phases
    with h5py.File(made[0], "r+") as f:  # a file that did (continual.cost_summary reads it)
        f["cost/train_seconds"] = np.array([30.0, 30.0, 30.0, 30.0])
        f["cost/eval_seconds/linear"] = np.array([3.0, 3.0, 3.0, 3.0, 3.0])
    rehash(made[0])
    [timed] = leaderboard.build(leaderboard.collect(tmp_path))[0]["rows"]
    assert timed["cost"]["train_minutes"]["mean"] == pytest.approx(2.0) and timed["cost"]["train_minutes"]["n"] == 1
    assert timed["cost"]["eval_minutes"]["mean"] == pytest.approx(0.25)
    [init] = table["init"]
    assert init["kind"] == "init" and init["stream"] == "instance" and init["seeds"] == [0, 1, 2]
    assert init["metrics"]["final_avg_acc"]["mean"] == pytest.approx(np.mean([r["metrics/acc_init"].mean() for r in runs]))
    assert init["metrics"]["knn_acc"]["mean"] == pytest.approx(0.05) and init["metrics"]["gain_over_init"] is None
    md = leaderboard.markdown([table])
    lines = md.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("| method |")))
    assert lines[first + 2].startswith("| *random init* | — |")  # the stream's first row
    text = f"{100 * np.mean(gains):+.1f} [{100 * (np.mean(gains) - half):+.1f}, {100 * (np.mean(gains) + half):+.1f}]"
    assert f"| {text} |" in md and "| 2.0 | cpu | 3 |" in md
    assert "### stream: instance (smoke v2)" in md


def test_method_stream_pairs_nobody_ran_are_named(tmp_path):
    make_result(tmp_path, "simclr", "instance", "sequential", 0)
    make_result(tmp_path, "moco", "class", "replay", 0)
    [table] = leaderboard.build(leaderboard.collect(tmp_path))
    assert sorted((r["method"], r["stream"], r["strategy"], len(r["seeds"])) for r in table["rows"]) == [
        ("moco", "class", "replay", 1),
        ("simclr", "instance", "sequential", 1),
    ]
    assert table["missing"] == {"class": ["moco / sequential"], "instance": ["simclr / replay"]}
    assert table["not_run"] == ["moco on instance", "simclr on class"]
    md = leaderboard.markdown([table])
    assert "Not run under this protocol: moco on instance, simclr on class." in md
    assert (
        md.index("### stream: class (smoke v2)")
        < md.index("Not run on class: moco / sequential.")
        < md.index("### stream: instance (smoke v2)")
    )


def test_ranks_restart_per_stream_under_a_ranking_protocol(tmp_path):
    # a stream sets the probes' task, so a class-stream 60% must not outrank an instance-stream 50% of
    # another table block: each stream's rows are ranked among themselves
    flat = lambda x: np.full((T, T), x)  # noqa: E731
    proto = ranked_protocol()
    make_result(tmp_path, "simclr", "class", "sequential", 0, acc=flat(0.6), proto=proto)
    make_result(tmp_path, "moco", "class", "sequential", 0, acc=flat(0.3), proto=proto)
    make_result(tmp_path, "simclr", "instance", "sequential", 0, acc=flat(0.5), proto=proto)
    make_result(tmp_path, "moco", "instance", "sequential", 0, acc=flat(0.4), proto=proto)
    [table] = leaderboard.build(leaderboard.collect(tmp_path))
    ranks = [(r["stream"], r["method"], r["rank"]) for r in table["rows"]]
    assert table["ranked"]
    assert ranks == [("class", "simclr", 1), ("class", "moco", 2), ("instance", "simclr", 1), ("instance", "moco", 2)]
    md = leaderboard.markdown([table])
    assert "grouped by stream" in md and "| rank | method | strategy |" in md
    assert "| 1 | simclr | sequential | 60.0 |" in md and "| — | *random init* | — |" in md


def test_a_protocol_that_says_it_is_not_for_ranking_gets_no_rank(tmp_path):
    """smoke says ranked = false (an unhashed key, so its submitted files keep their hash and follow it)."""
    smoke = protocols.load("smoke")
    assert not smoke.ranked and smoke.hash == "ac982343524d5a75361a67e568ab23683426401785a56f9036bd710e98471ffc"
    assert ranked_protocol().model_copy(update={"name": "smoke"}).hash == smoke.hash
    make_result(tmp_path / "a", "simclr", "instance", "sequential", 0)
    make_result(tmp_path / "b", "simclr", "instance", "sequential", 0, proto=ranked_protocol())
    tables = {t["protocol"]: t for t in leaderboard.build(leaderboard.collect(tmp_path))}
    assert not tables["smoke"]["ranked"] and tables["ranked"]["ranked"]
    assert tables["smoke"]["rows"][0]["rank"] is None and tables["ranked"]["rows"][0]["rank"] == 1
    unranked = protocols.load("smoke").model_copy(update={"name": "mine"})  # not shipped: its stored text decides
    make_result(tmp_path / "c", "simclr", "instance", "sequential", 0, proto=unranked)
    assert not next(t for t in leaderboard.build(leaderboard.collect(tmp_path)) if t["protocol"] == "mine")["ranked"]


def test_csv_and_json_formats(board, capsys):
    folder, _ = board
    assert main(["leaderboard", "--results", str(folder), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 6  # a random-init row and 3 runs under the first hash, an init row and 1 run under the other
    assert [r["method"] for r in rows if r["method"] == "random init"] == ["random init"] * 2
    assert not [r for r in rows if r["method"] == "moco" and r["strategy"] == "joint"]  # nobody ran it: not a row
    seq = next(r for r in rows if r["method"] == "simclr" and r["strategy"] == "sequential" and r["protocol_hash"] == SMOKE_HASH)
    assert float(seq["gain_over_init_low"]) < float(seq["gain_over_init_mean"]) < float(seq["gain_over_init_high"])
    assert seq["ranked"] == "0" and seq["rank"] == "" and seq["device"] == "cpu"
    assert main(["leaderboard", "--results", str(folder), "-o", str(folder / "board.json")]) == 0  # format from suffix
    doc = json.loads((folder / "board.json").read_text())
    assert len(doc["tables"]) == 2 and [m["key"] for m in doc["metrics"]][0] == "final_avg_acc"
    seq = next(
        r
        for t in doc["tables"]
        for r in t["rows"]
        if r["strategy"] == "sequential" and r["method"] == "simclr" and t["hash"] != other_protocol().hash
    )
    assert np.asarray(seq["acc_matrix"]).shape == (T, T)


def test_empty_and_missing_results_folder(tmp_path, capsys):
    assert main(["leaderboard", "--results", str(tmp_path)]) == 0
    assert "No result files found" in capsys.readouterr().out
    assert main(["leaderboard", "--results", str(tmp_path / "nope")]) == 2


def test_shipped_leaderboard_readme_is_up_to_date():
    """leaderboard/README.md is what the command renders from leaderboard/results (CI checks the same)."""
    root = Path(__file__).resolve().parents[1] / "leaderboard"
    if not (root / "results").is_dir():
        pytest.skip("no leaderboard/results in this checkout")
    tables = leaderboard.build(leaderboard.collect(root / "results"))
    assert (root / "README.md").read_text(encoding="utf-8") == leaderboard.markdown(tables)


# ---------------------------------------------------------------------- the HTML page in Chromium
def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None)
    if not chromium or not driver:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def test_html_page_sorts_filters_and_draws_heat_map_in_chromium(board, tmp_path):
    folder, made = board
    make_result(folder / "c", "simclr", "instance", "sequential", 0, proto=ranked_protocol())
    page = tmp_path / "index.html"
    assert main(["leaderboard", "--results", str(folder), "--format", "html", "-o", str(page)]) == 0
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text  # self-contained
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    import ssl_bench_plugins.methods.simclr as simclr

    browser = _browser()
    try:
        browser.get(page.as_uri())
        sections = browser.find_elements(By.CSS_SELECTOR, "section.protocol")
        assert len(sections) == 3
        legend = browser.find_element(By.ID, "legend").text
        assert "random init" in legend and "*" not in legend  # the markdown legend, without its emphasis marks
        section = next(s for s in sections if s.get_attribute("data-hash") == SMOKE_HASH)
        ranked = next(s for s in sections if s.get_attribute("data-ranked") == "true")
        assert ranked.find_elements(By.CSS_SELECTOR, "th[data-key='rank']")  # a ranking protocol has ranks
        assert not section.find_elements(By.CSS_SELECTOR, "th[data-key='rank']")  # smoke is not for ranking

        def column(key):
            return [td.text for td in section.find_elements(By.CSS_SELECTOR, f"tbody tr.run td[data-key='{key}']")]

        def strategies():
            return [tr.get_attribute("data-strategy") for tr in section.find_elements(By.CSS_SELECTOR, "tbody tr.run")]

        body = section.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert body[0].text == "stream: instance" and "init" in body[1].get_attribute("class")  # heading, random init
        assert body[-1].text == "Not run on instance: moco / joint."
        assert column("method") == ["moco", "simclr", "simclr"]  # not ranked: by method and strategy
        header = section.find_element(By.CSS_SELECTOR, "th[data-key='final_avg_acc']")
        header.click()  # an ↑ column: best first on the first click
        values = [float(v.split(" ")[0]) for v in column("final_avg_acc")]
        assert values == sorted(values, reverse=True) and header.get_attribute("aria-sort") == "descending"
        header.click()
        values = [float(v.split(" ")[0]) for v in column("final_avg_acc")]
        assert values == sorted(values) and header.get_attribute("aria-sort") == "ascending"
        section.find_element(By.CSS_SELECTOR, "th[data-key='forgetting_max']").click()  # a ↓ column: lowest first
        assert section.find_element(By.CSS_SELECTOR, "th[data-key='forgetting_max']").get_attribute("aria-sort") == "ascending"
        assert "init" in section.find_elements(By.CSS_SELECTOR, "tbody tr")[1].get_attribute("class")  # init stays first

        select = Select(section.find_element(By.CSS_SELECTOR, "select.filter-strategy"))
        assert [o.text for o in select.options][0] == "all strategies"
        select.select_by_value("joint")
        assert set(strategies()) == {"joint"} and len(strategies()) == 1
        select.select_by_value("")
        Select(section.find_element(By.CSS_SELECTOR, "select.filter-stream")).select_by_value("instance")
        assert len(strategies()) == 3

        row = section.find_element(By.CSS_SELECTOR, "tbody tr[data-method='simclr'][data-strategy='sequential']")
        row.click()
        cells = section.find_elements(By.CSS_SELECTOR, ".heatmap svg rect.cell")
        assert len(cells) == (T + 1) * T  # init row + one row per phase
        expected = np.mean([made[("simclr", "sequential", s)].acc_matrix for s in (0, 1)], axis=0)
        shown = np.array([float(c.get_attribute("data-value")) for c in cells[T:]]).reshape(T, T)
        np.testing.assert_allclose(shown, expected, atol=1e-4)
        # the colour scale is the stream's own in this table, from its lowest accuracy (white) to its highest (dark blue)
        [table] = leaderboard.build(leaderboard.collect(folder / "a"))
        lo, hi = table["scale"]["instance"]["min"], table["scale"]["instance"]["max"]
        assert 0 < lo < hi < 1 and (lo, hi) != (0.0, 1.0)
        for c in cells:
            t = (float(c.get_attribute("data-value")) - lo) / (hi - lo)
            rgb = [round(f + (to - f) * t) for f, to in zip((247, 251, 255), (8, 48, 107))]
            assert c.get_attribute("fill") == f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"
        details = section.find_element(By.CSS_SELECTOR, ".heatmap .details").text
        assert "plugin simclr 0.1.0" in details and "built-in: plugins/methods/simclr.py" in details
        assert simclr.__paper__ in details and "cpu" in details
        assert "selected" in section.find_element(
            By.CSS_SELECTOR, "tbody tr[data-method='simclr'][data-strategy='sequential']"
        ).get_attribute("class")
    finally:
        browser.quit()
