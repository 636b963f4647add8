"""``ssl-bench run`` is idempotent and a result depends only on its configuration (issue 32, item 4)."""

from __future__ import annotations

from pathlib import Path

from ssl_bench import results
from ssl_bench.cli import main


def test_run_skips_a_finished_configuration_and_stores_nothing_from_other_files(tiny_protocol, tmp_path, capsys, caplog):
    text = tiny_protocol.read_text().replace(
        "probe_train_per_experience = 0", 'probe_train_per_experience = 0\nevaluators = ["linear", "cka"]'
    )
    tiny_protocol.write_text(text + "\n[eval.options.linear]\nl2 = 1e-4\nmax_iter = 50\n")
    run = ["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path)]
    assert main([*run, "--strategy", "sequential"]) == 0
    alone = Path(capsys.readouterr().out.strip())
    before = alone.read_bytes()
    stored = sorted(results.Result(alone).arrays)
    assert main([*run, "--strategy", "joint"]) == 0  # the joint run's file is now in --out
    capsys.readouterr()

    caplog.clear()
    assert main([*run, "--strategy", "sequential"]) == 0  # finished: skipped, with one line naming the file
    assert capsys.readouterr().out.strip() == str(alone) and alone.read_bytes() == before
    [line] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert str(alone) in line and "--restart" in line

    assert main([*run, "--strategy", "sequential", "--restart"]) == 0  # retrained, next to a joint file this time
    again = results.Result(capsys.readouterr().out.strip())
    assert again.path == alone and "end/cka/joint" not in again.arrays  # CKA to joint: report/plot, from both files
    assert "metrics/cka/features" in again.arrays
    assert sorted(again.arrays) == stored  # the same datasets as without a joint file next to it


def test_run_refuses_to_skip_or_overwrite_a_file_of_another_protocol(tiny_protocol, tmp_path, capsys):
    run = ["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path)]
    assert main(run) == 0
    path = capsys.readouterr().out.strip()
    tiny_protocol.write_text(tiny_protocol.read_text().replace("batch_size = 32", "batch_size = 16"))  # same name, new hash
    assert main(run) == 2
    err = capsys.readouterr().err
    assert f"'{path}' holds a run of another configuration" in err and "--restart" in err
