"""--save-backbone writes the final backbone as safetensors; `ssl-bench eval` probes saved or external weights."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from ssl_bench import results
from ssl_bench.cli import main
from ssl_bench.registry import Registry


def test_saved_backbone_evaluates_to_the_runs_last_row(tiny_protocol, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["-q", "run", "--protocol", str(tiny_protocol), "--out", str(out), "--save-backbone"]) == 0
    result = results.Result(capsys.readouterr().out.strip())
    weights = Path(result.path).with_suffix(".safetensors")
    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata()
        assert any(k.startswith("stages.") for k in f.keys())
    assert meta["config_hash"] == hashlib.sha256(result["config"].encode()).hexdigest()
    assert (meta["result"], meta["method"], meta["seed"], meta["backbone"]) == (Path(result.path).name, "simclr", "0", "resnet18")
    assert meta["protocol_hash"] == result.attrs["protocol_hash"]

    report = tmp_path / "eval.json"
    assert main(["-q", "eval", str(weights), "--protocol", str(tiny_protocol), "-o", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "linear/acc" in printed and "mean" in printed
    doc = json.loads(report.read_text())
    assert doc["metadata"]["config_hash"] == meta["config_hash"]
    # the same backbone, stream, seed and probe as after the run's last phase: the same accuracies
    np.testing.assert_allclose(doc["metrics"]["linear/acc"], result.acc_matrix[-1], atol=1e-6)


def test_eval_takes_an_external_state_dict(tiny_protocol, tmp_path, capsys):
    registry = Registry.discover()
    backbone = registry.get("backbone", "resnet18").factory(width=0.125)
    path = tmp_path / "external.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in backbone.state_dict().items()}}, path)
    assert main(["-q", "eval", str(path), "--protocol", str(tiny_protocol)]) == 0
    out = capsys.readouterr().out
    assert "no metadata" in out and "linear/acc" in out

    wrong = tmp_path / "wide.pt"
    torch.save(registry.get("backbone", "resnet18").factory(width=0.25).state_dict(), wrong)
    assert main(["-q", "eval", str(wrong), "--protocol", str(tiny_protocol)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "does not fit the protocol's backbone" in line


@pytest.mark.parametrize("content", [b"not a model", None])
def test_eval_refuses_bad_files_in_one_line(content, tiny_protocol, tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    if content is not None:
        path.write_bytes(content)
    assert main(["-q", "eval", str(path), "--protocol", str(tiny_protocol)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("ssl-bench: error:") and str(path) in line
