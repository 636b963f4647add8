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


def other_protocol():
    """The smoke protocol with another budget: same name and version, another hash."""
    smoke = protocols.load("smoke")
    return smoke.model_copy(update={"train": smoke.train.model_copy(update={"epochs_per_experience": 3.0})})


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
        "metrics/acc_init": rng.uniform(0.1, 0.2, size=n_exp),
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


def test_cells_are_mean_std_over_seeds_with_gap_and_missing_cells(board):
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
    missing = _row(table, "moco", "instance", "joint")  # nobody ran it: a row of "—", not dropped
    assert missing["seeds"] == [] and missing["rank"] is None and all(v is None for v in missing["metrics"].values())
    ranked = [r for r in table["rows"] if r["rank"] is not None]
    means = [r["metrics"]["final_avg_acc"]["mean"] for r in ranked]
    assert means == sorted(means, reverse=True) and [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    assert table["rows"][-1] is missing

    md = leaderboard.markdown([table])
    assert "| — | moco | instance | joint | — | — | — | — | — | — | 0 |" in md
    assert "final acc % ↑" in md and "forgetting ↓" in md and "gap to joint ↓" in md
    shown = leaderboard.cell(leaderboard.METRICS[0], seq["metrics"]["final_avg_acc"])
    assert f"| simclr | instance | sequential | {shown} |" in md
    assert shown == f"{np.mean(finals) * 100:.1f} ± {np.std(finals, ddof=1) * 100:.1f}"


def test_method_stream_pairs_nobody_ran_are_named(tmp_path):
    make_result(tmp_path, "simclr", "instance", "sequential", 0)
    make_result(tmp_path, "moco", "class", "replay", 0)
    [table] = leaderboard.build(leaderboard.collect(tmp_path))
    assert sorted((r["method"], r["stream"], r["strategy"], len(r["seeds"])) for r in table["rows"]) == [
        ("moco", "class", "replay", 1),
        ("moco", "class", "sequential", 0),
        ("simclr", "instance", "replay", 0),
        ("simclr", "instance", "sequential", 1),
    ]
    assert table["not_run"] == ["moco on instance", "simclr on class"]
    assert "Not run under this protocol: moco on instance, simclr on class." in leaderboard.markdown([table])


def test_ranks_restart_per_stream(tmp_path):
    # a stream sets the probes' task, so a class-stream 60% must not outrank an instance-stream 50% of
    # another table block: each stream's rows are ranked among themselves
    flat = lambda x: np.full((T, T), x)  # noqa: E731
    make_result(tmp_path, "simclr", "class", "sequential", 0, acc=flat(0.6))
    make_result(tmp_path, "moco", "class", "sequential", 0, acc=flat(0.3))
    make_result(tmp_path, "simclr", "instance", "sequential", 0, acc=flat(0.5))
    make_result(tmp_path, "moco", "instance", "sequential", 0, acc=flat(0.4))
    [table] = leaderboard.build(leaderboard.collect(tmp_path))
    ranks = [(r["stream"], r["method"], r["rank"]) for r in table["rows"]]
    assert ranks == [("class", "simclr", 1), ("class", "moco", 2), ("instance", "simclr", 1), ("instance", "moco", 2)]
    assert "ranked per stream" in leaderboard.markdown([table])


def test_csv_and_json_formats(board, capsys):
    folder, _ = board
    assert main(["leaderboard", "--results", str(folder), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 5  # 4 under the first hash (one missing cell), 1 under the other
    missing = next(r for r in rows if r["method"] == "moco" and r["strategy"] == "joint")
    assert missing["final_avg_acc_mean"] == "" and missing["n_seeds"] == "0" and missing["rank"] == ""
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
    page = tmp_path / "index.html"
    assert main(["leaderboard", "--results", str(folder), "--format", "html", "-o", str(page)]) == 0
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text  # self-contained
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser = _browser()
    try:
        browser.get(page.as_uri())
        sections = browser.find_elements(By.CSS_SELECTOR, "section.protocol")
        assert len(sections) == 2
        section = next(s for s in sections if s.get_attribute("data-hash") != other_protocol().hash)

        def column(key):
            return [td.text for td in section.find_elements(By.CSS_SELECTOR, f"tbody td[data-key='{key}']")]

        def strategies():
            return [tr.get_attribute("data-strategy") for tr in section.find_elements(By.CSS_SELECTOR, "tbody tr")]

        assert column("rank") == ["1", "2", "3", "—"]
        header = section.find_element(By.CSS_SELECTOR, "th[data-key='final_avg_acc']")
        header.click()  # ascending, missing last
        values = [float(v.split(" ")[0]) for v in column("final_avg_acc")[:-1]]
        assert values == sorted(values) and column("final_avg_acc")[-1] == "—"
        assert header.get_attribute("aria-sort") == "ascending"
        header.click()  # descending, missing still last
        values = [float(v.split(" ")[0]) for v in column("final_avg_acc")[:-1]]
        assert values == sorted(values, reverse=True) and column("final_avg_acc")[-1] == "—"
        section.find_element(By.CSS_SELECTOR, "th[data-key='method']").click()
        assert column("method") == sorted(column("method"))

        Select(section.find_element(By.CSS_SELECTOR, "select.filter-strategy")).select_by_value("joint")
        assert set(strategies()) == {"joint"} and len(strategies()) == 2
        Select(section.find_element(By.CSS_SELECTOR, "select.filter-strategy")).select_by_value("")
        Select(section.find_element(By.CSS_SELECTOR, "select.filter-stream")).select_by_value("instance")
        assert len(strategies()) == 4

        row = section.find_element(By.CSS_SELECTOR, "tbody tr[data-method='simclr'][data-strategy='sequential']")
        row.click()
        cells = section.find_elements(By.CSS_SELECTOR, ".heatmap svg rect.cell")
        assert len(cells) == (T + 1) * T  # init row + one row per phase
        expected = np.mean([made[("simclr", "sequential", s)].acc_matrix for s in (0, 1)], axis=0)
        shown = np.array([float(c.get_attribute("data-value")) for c in cells[T:]]).reshape(T, T)
        np.testing.assert_allclose(shown, expected, atol=1e-4)
        assert "selected" in section.find_element(
            By.CSS_SELECTOR, "tbody tr[data-method='simclr'][data-strategy='sequential']"
        ).get_attribute("class")
    finally:
        browser.quit()
