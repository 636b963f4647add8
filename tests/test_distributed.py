"""One run over two processes with torchrun (gloo on the CPU): rank 0 writes one result file."""

import os
import subprocess
import sys

import numpy as np

from ssl_bench import results

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")  # installed with torch, beside python


def test_torchrun_two_processes_write_one_result(tiny_protocol, tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.run(
        [
            TORCHRUN,
            "--nproc_per_node=2",
            "-m",
            "ssl_bench",  # as README says: torchrun --nproc_per_node=N -m ssl_bench run ...
            "-q",
            "run",
            "--protocol",
            str(tiny_protocol),
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [line for line in proc.stdout.splitlines() if line.endswith(".h5")]
    assert len(printed) == 1  # only rank 0 prints (and writes)
    files = list(out.glob("*.h5"))
    assert len(files) == 1 and not list(out.glob(".*"))
    r = results.Result(files[0])
    assert r.attrs["world_size"] == 2
    assert len(r["train/loss"]) == r.attrs["steps"] and np.isfinite(r["train/loss"]).all()
    assert r.acc_matrix.shape == (2, 2)
    # the protocol's batch size is the global batch: the same steps as one process (README, "One run on several GPUs")
    single = subprocess.run(
        [sys.executable, "-m", "ssl_bench", "-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert single.returncode == 0, single.stderr[-2000:]
    one = results.Result(single.stdout.strip().splitlines()[-1])
    assert one.attrs["world_size"] == 1 and one.attrs["steps"] == r.attrs["steps"]
    assert one.attrs["images_processed"] == r.attrs["images_processed"]
