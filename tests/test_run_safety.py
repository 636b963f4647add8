"""Issue 16: nothing runs that should not, nothing is lost, nothing is mixed up.

A checkpoint is data, never code; a full disk is one line and keeps the checkpoint; two processes
of one configuration do not run at once; resume does not depend on how --out is spelled.
"""

import os
import subprocess
import sys
import textwrap
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_bench.api import Features
from ssl_bench.engine import RunConfig, checkpoint
from ssl_bench.errors import UserError
from ssl_bench.protocol import load


def cli(*args, cwd=None, prelude=""):
    """The real command in a subprocess (``prelude``: Python run before it); (exit status, stdout, stderr)."""
    code = f"import sys\n{prelude}\nfrom ssl_bench.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def config_of(protocol, out):
    """The RunConfig that `ssl-bench run --protocol PROTOCOL --out OUT` builds (same result name)."""
    return RunConfig(protocol=load(str(protocol)), method="simclr", stream="instance", strategy="sequential", seed=0, out=out)


def one_error_line(stderr):
    """The one error line (warnings logged before it aside) of a command that failed cleanly."""
    lines = [line for line in stderr.strip().splitlines() if line.startswith("ssl-bench: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr and stderr.strip().endswith(lines[0]), stderr
    return lines[0]


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MARKER']}",))


# ------------------------------------------------------------------------------------- checkpoints
def test_malicious_checkpoint_runs_no_code(tiny_protocol, tmp_path, monkeypatch):
    out, marker = tmp_path / "runs", tmp_path / "PWNED"
    out.mkdir()
    monkeypatch.setenv("MARKER", str(marker))
    ckpt = checkpoint.path_for(config_of(tiny_protocol, out))
    checkpoint.write({"fingerprint": "x", "payload": Evil()}, ckpt, "")  # with a valid checksum: only weights_only stops it
    code, _, stderr = cli("-q", "run", "--protocol", tiny_protocol, "--out", out)
    assert code == 2 and not marker.exists()
    line = one_error_line(stderr)
    assert str(ckpt) in line and "--restart" in line and "posix.system" in line
    assert ckpt.exists()  # left for the user to look at; --restart starts over
    with pytest.raises(UserError, match="damaged or not an ssl-bench checkpoint"):
        checkpoint.read(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "not_a_dict"])
def test_damaged_checkpoint_is_one_line_naming_it(damage, tmp_path):
    path = tmp_path / ".x.h5.ckpt"
    checkpoint.write(checkpoint.pack({"fingerprint": "f", "w": torch.randn(1000)}), path, "")
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save([1, 2, 3], path)
    with pytest.raises(UserError) as err:
        checkpoint.read(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "--restart" in message


def test_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    """What strategies and evaluators keep (numpy arrays and scalars, RNG states with 128-bit integers,
    module state dicts with their version metadata, Features) survives save and load exactly."""
    module = torch.nn.BatchNorm1d(3).state_dict()
    feats = Features([torch.randn(2, 3)], [torch.tensor([0, 1])], [torch.randn(1, 3)], [torch.tensor([1])])
    state = {
        "rng": np.random.default_rng(7).bit_generator.state,
        "index": np.arange(5, dtype=np.int64),
        "mask": np.array([[True, False]]),
        "names": [np.float32(0.25), np.int64(3), 1.5, "a", None, (1, 2)],
        "per_group": {np.int64(4): 2},
        "groups": {3, 1},
        "module": module,
        "previous": feats,
    }
    path = tmp_path / "state.ckpt"
    checkpoint.write(checkpoint.pack(state), path, "")
    back = checkpoint.unpack(checkpoint.read(path))
    assert back["rng"] == state["rng"]
    for key in ("index", "mask"):
        assert back[key].dtype == state[key].dtype and np.array_equal(back[key], state[key])
    f32 = back["names"][0]
    assert isinstance(f32, np.float32) and f32 == np.float32(0.25) and isinstance(back["names"][1], np.int64)
    assert back["names"][2:] == [1.5, "a", None, (1, 2)]
    assert back["per_group"] == {4: 2} and back["groups"] == [1, 3]
    assert isinstance(back["module"], OrderedDict) and back["module"]._metadata == module._metadata
    assert isinstance(back["previous"], Features) and torch.equal(back["previous"].train[0], feats.train[0])
    with pytest.raises(TypeError, match=r"state\['bad'\] is a object"):
        checkpoint.pack({"bad": object()})


def test_fingerprint_does_not_depend_on_how_out_is_spelled(tiny_protocol, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative, absolute = config_of(tiny_protocol, Path("./x")), config_of(tiny_protocol, tmp_path / "x")
    assert checkpoint.fingerprint(relative) == checkpoint.fingerprint(absolute)
    relative.data_root, absolute.data_root = "data", str(tmp_path / "data")
    assert checkpoint.fingerprint(relative) == checkpoint.fingerprint(absolute)
    absolute.seed = 1
    assert checkpoint.fingerprint(relative) != checkpoint.fingerprint(absolute)


# -------------------------------------------------------------------------------------- full disk
LIMIT_WRITES = textwrap.dedent("""
    import resource, signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing

    def limit(module, name):
        original = getattr(module, name)

        def limited(*args, **kwargs):
            resource.setrlimit(resource.RLIMIT_FSIZE, (2000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            return original(*args, **kwargs)

        setattr(module, name, limited)
""")


def test_full_disk_at_the_result_write_keeps_the_checkpoint_and_resumes_under_another_spelling(tiny_protocol, tmp_path):
    out = tmp_path / "runs"
    prelude = LIMIT_WRITES + "from ssl_bench import results\nlimit(results, 'write')\n"
    code, stdout, stderr = cli("-q", "run", "--protocol", tiny_protocol, "--out", out, prelude=prelude)
    line = one_error_line(stderr)
    assert code == 2 and "no space left on device while writing" in line and "checkpoint is kept" in line
    assert not list(out.glob("*.h5")) and not list(out.glob(".*.tmp")) and not list(out.glob(".*.lock"))
    assert len(list(out.glob(".*.ckpt"))) == 1
    stale = out / f".{config_of(tiny_protocol, out).result_path.name}.99999.tmp"
    stale.write_bytes(b"left by a killed write")
    # the same folder spelled relative to the working directory: the run resumes after its last phase
    code, stdout, stderr = cli("run", "--protocol", tiny_protocol, "--out", "./runs", cwd=tmp_path)
    assert code == 0, stderr
    assert "resuming from checkpoint after phase 2/2" in stderr and "mean accuracy" not in stderr  # nothing trained
    assert (tmp_path / stdout.strip()).is_file()
    assert not list(out.glob(".*"))  # checkpoint, stale temp file and lock file gone


def test_full_disk_at_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / ".r.h5.ckpt"
    path.write_bytes(b"previous checkpoint")
    script = LIMIT_WRITES + textwrap.dedent(f"""
        import torch
        from ssl_bench.engine import checkpoint
        from ssl_bench.errors import UserError
        limit(checkpoint, 'write')
        try:
            checkpoint.write({{"w": torch.zeros(100_000)}}, checkpoint.Path({str(path)!r}), "the previous checkpoint is kept")
        except UserError as err:
            print(err)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"no space left on device while writing {path}")
    assert "previous checkpoint is kept" in proc.stdout
    assert path.read_bytes() == b"previous checkpoint" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


# ---------------------------------------------------------------------------------------- locking
def test_second_process_of_a_configuration_is_refused_or_waits(tiny_protocol, tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    with checkpoint.lock(config_of(tiny_protocol, out)):  # this process is running the configuration
        code, _, stderr = cli("-q", "run", "--protocol", tiny_protocol, "--out", out)
        assert code == 2
        assert f"another process is running this configuration (pid {os.getpid()})" in one_error_line(stderr)
        waiting = subprocess.Popen(
            [sys.executable, "-m", "ssl_bench.cli", "run", "--protocol", str(tiny_protocol), "--out", str(out), "--wait"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        seen = []
        while len(seen) < 20 and not any("waiting for the other process" in line for line in seen):
            seen.append(waiting.stderr.readline())  # blocks until the process logs
        assert f"running this configuration (pid {os.getpid()})" in seen[-1], seen
        time.sleep(1)
        assert waiting.poll() is None  # blocked on the lock
        assert not list(out.glob("*.h5"))
    stdout, stderr = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, stderr
    assert stdout.strip().endswith(".h5") and not list(out.glob(".*"))
