"""benchmark/gpu_lease.sh, the one script for a lent GPU (issue 35), tested where CI runs: its plan on paper, its
timeouts, and ``--dry-run-on-cpu`` (the same script end to end on the CPU with tiny sizes)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmark" / "gpu_lease.sh"
TEXT = SCRIPT.read_text()
EARLY = ("env", "wheels", "build", "ops", "sync", "speed")  # in-process steps: must end ok


def plan_table() -> tuple[dict[str, tuple[str, str]], int]:
    """The plan at the top of the script: {step: (plan, floor)} and its stated total."""
    rows, total = {}, None
    for line in TEXT.splitlines():
        m = re.match(r"#\s+(\w+)\s+(\d+|-)\s+(\d+|-)\s+\S", line)
        if m and m.group(1) != "step":
            rows[m.group(1)] = (m.group(2), m.group(3))
        t = re.match(r"#\s+total\s+(\d+)", line)
        if t:
            total = int(t.group(1))
    assert total is not None
    return rows, total


def case_values(name: str) -> dict[str, str]:
    body = re.search(rf"^{name}\(\) {{ case \"\$1\" in (.*?) esac; }}", TEXT, re.S | re.M).group(1)
    return dict(re.findall(r"(\w+)\) echo (\d+)", body))


def test_the_plan_fits_ten_minutes_and_is_what_the_script_does():
    rows, total = plan_table()
    assert sum(int(p) for p, _ in rows.values() if p != "-") == total <= 600
    steps = re.findall(r"^run (\w+) step_\w+$", TEXT, re.M)
    assert steps and [s for s in rows if s != "pack"] == steps  # every step in the plan, in the order run
    plans, floors = case_values("plan"), case_values("floor")
    for step in steps:
        plan, floor = rows[step]
        assert plans[step] == plan or (plan == "-" and int(plans[step]) >= 600)  # "-": whatever is left
        assert floors[step] == floor and int(floor) > 0


def _lease(tmp_path: Path, budget: int, timeout: float) -> tuple[subprocess.CompletedProcess, list[dict], float]:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "BUDGET": str(budget), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    t = time.time()
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run-on-cpu"], env=env, capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return proc, lines, time.time() - t


def test_a_short_budget_skips_steps_and_never_runs_one_without_time(tmp_path):
    proc, lines, took = _lease(tmp_path, budget=14, timeout=120)  # 4 s for the first step, below every floor
    steps = [r for r in lines if "status" in r and "measure" not in r]
    assert [r["step"] for r in steps] == [s for s in plan_table()[0] if s != "pack"]
    assert all(r["status"] == "skipped" and r["timeout"] == 0 for r in steps), steps
    assert proc.returncode == 0 and took < 60


@pytest.mark.slow
def test_dry_run_on_cpu_runs_every_step_within_its_budget(tmp_path):
    budget = 170
    proc, lines, took = _lease(tmp_path, budget=budget, timeout=400)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["lease.log", "logs.tar.gz", "results.jsonl"]  # at most 8 come back from a lease
    assert took < budget + 30, f"{took:.0f} s for a budget of {budget} s"
    status = {r["step"]: r for r in lines if "status" in r and "measure" not in r and "method" not in r}
    assert set(status) == {s for s in plan_table()[0] if s != "pack"}
    assert not [r for r in status.values() if r["status"] == "failed"], proc.stdout[-3000:]
    assert all(status[s]["status"] == "ok" for s in EARLY), status  # later ones may run out of a loaded CI's time
    assert all(0 < r["timeout"] or r["status"] == "skipped" for r in status.values())
    synced = [r for r in lines if r["step"] == "sync" and "method" in r]
    assert [r["method"] for r in synced] == ["simclr", "byol:mas", "dino", "mae"] and all(r["ok"] for r in synced)
    speed = [r for r in lines if r.get("measure") == "throughput"]
    assert speed and speed[0]["images_per_s"] > 0
    if status["sweep"]["status"] == "ok":
        runs = [r for r in lines if r.get("measure") == "sweep_run"]
        assert len(runs) == 2 and all(0 <= r["final_avg_acc"] <= 1 for r in runs)


@pytest.mark.parametrize("name", ["gpu_check.sh", "gpu_perf.sh", "gpu_sweep.sh", "gpu_zoo.sh", "gpu_env.sh"])
def test_the_scattered_gpu_scripts_are_folded_into_the_lease(name):
    assert not (SCRIPT.parent / name).exists()


def test_a_step_past_its_timeout_takes_its_whole_process_group_along(tmp_path):
    """A sweep's pool workers are grandchildren: killed with the step, they cannot outlive its timeout."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_speed
    finally:
        sys.path.remove(str(SCRIPT.parent))
    pidfile = tmp_path / "pid"
    cmd = ["bash", "-c", f"sleep 60 & echo $! > {pidfile}; wait"]
    t = time.time()
    with pytest.raises(subprocess.TimeoutExpired):
        gpu_speed.run_group(cmd, timeout=2)
    assert time.time() - t < 20
    pid = int(pidfile.read_text())
    time.sleep(0.5)
    status = Path(f"/proc/{pid}/status")
    state = status.read_text().split("State:")[1].split()[0] if status.exists() else "gone"
    assert state in ("gone", "Z"), f"the grandchild is still running (state {state})"  # Z: dead, not yet reaped
