"""benchmark/phase_check.py: the first-phase diagnostic, at a few steps of a tiny protocol."""

from pathlib import Path

import pytest
import torch

from tests.conftest import load_script

SCRIPT = Path(__file__).parents[1] / "benchmark" / "phase_check.py"


@pytest.fixture(scope="module")
def phase_check():
    return load_script(SCRIPT)


def test_mean_cosine_is_one_for_a_constant_and_zero_for_orthogonal_rows(phase_check):
    assert phase_check.mean_cosine(torch.ones(5, 3) * torch.tensor([[1.0], [2], [3], [4], [5]])) == pytest.approx(1.0)
    assert phase_check.mean_cosine(torch.eye(4)) == pytest.approx(0.0)
    x = torch.randn(7, 4, dtype=torch.float64)
    z = torch.nn.functional.normalize(x, dim=1)
    expected = sum(float(z[i] @ z[j]) for i in range(7) for j in range(7) if i != j) / 42
    assert phase_check.mean_cosine(x) == pytest.approx(expected)


def test_it_trains_the_first_phase_as_a_run_would_and_reports(phase_check, tiny_protocol, capsys):
    out = phase_check.main(["--protocol", str(tiny_protocol), "--method", "simclr", "--steps", "3", "--every", "1"])
    text = capsys.readouterr().out
    assert out["steps"] == 3 and torch.isfinite(torch.tensor(out["loss_last"]))
    assert "tiny-v1 simclr seed 0: 3 of" in text
    assert [line.split()[0] for line in text.splitlines() if line.strip()[:1].isdigit()] == ["0", "1", "2", "3"]
    assert 0 <= out["linear/acc"] <= 1 and 0 <= out["linear/acc init"] <= 1  # the tiny protocol's evaluator
