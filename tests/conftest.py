"""Shared fixtures: a tiny protocol that trains in seconds on generated data, one-thread torch, the
compiled ops, and the CUDA skip marks."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and does not spin against other processes."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ops():
    """``torch.ops.ssl_bench``; fails (does not skip) when the extension is not built."""
    from ssl_bench.ops import _ext

    if not _ext.available():
        pytest.fail(
            f"the extension ssl_bench._C is not built ({_ext._load_error}); install with `pip install --no-build-isolation -e .`"
        )
    return torch.ops.ssl_bench


TINY = textwrap.dedent("""
    name = "tiny"
    version = 1
    family = "tiny"
    seeds = [0, 1]

    [dataset]
    name = "synthetic"
    resolution = 16
    options = { train_per_class_domain = 3, test_per_class_domain = 2, n_domains = 4 }

    [stream]
    n_experiences = 2

    [backbone]
    name = "resnet18"
    options = { width = 0.125 }

    [train]
    epochs_per_experience = 1
    batch_size = 32

    [eval]
    probe_train_per_experience = 0

    [recipe]
    lr = 0.05
    lr_scaling = "none"
    schedule = "constant"
""")


@pytest.fixture
def tiny_protocol(tmp_path):
    """Path to a protocol file for a run of a few seconds (2 experiences, 16 px, tiny ResNet)."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def load_script(path: Path) -> ModuleType:
    """A script of this repository that is not in a package (e.g. under benchmark/), imported from its path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*args):
    """Run the real command in a subprocess; return (exit status, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_bench.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return proc.returncode, proc.stdout, proc.stderr
