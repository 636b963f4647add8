"""The S3L recipe as a protocol feature: train.stages sets the view resolution inside every phase."""

import math
import sys
import textwrap

import pytest

from ssl_bench import protocol, results
from ssl_bench.cli import main
from tests.conftest import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stages_train_at_small_resolution_then_full(tmp_path, capsys):
    proto = tmp_path / "s3l.toml"
    proto.write_text(
        TINY.replace(
            "batch_size = 32",
            "batch_size = 32\nstages = [{ resolution = 8, fraction = 0.75 }, { resolution = 16, fraction = 0.25 }]",
        )
    )
    recorder = tmp_path / "recorder.py"
    recorder.write_text(
        textwrap.dedent("""
        from ssl_bench import hookimpl
        from ssl_bench_plugins.methods.simclr import SimCLR

        SIZES = []

        class Recorder(SimCLR):
            def loss(self, views, labels):
                SIZES.append(tuple(v.shape[-1] for v in views))
                return super().loss(views, labels)

        @hookimpl
        def ssl_bench_methods():
            return {"recorder": Recorder}
    """)
    )
    assert main(["-q", "run", "--plugin", str(recorder), "--protocol", str(proto), "--out", str(tmp_path / "runs")]) == 0
    r = results.Result(capsys.readouterr().out.strip())
    sizes = sys.modules["ssl_bench_user_recorder"].SIZES
    steps = [int(s) for s in r["phases/steps"]]
    assert len(sizes) == sum(steps) and all(a == b for a, b in sizes)  # both views at the stage's size
    start = 0
    for n in steps:  # within every phase: the first 75% of the steps at 8 px, the rest at 16 px
        phase = [s[0] for s in sizes[start : start + n]]
        small = math.ceil(0.75 * n)
        assert phase == [8] * small + [16] * (n - small), phase
        start += n
    assert r.acc_matrix.shape == (2, 2)  # evaluated at the dataset's full resolution


@pytest.mark.parametrize("name", ["tinyimagenet-s3l", "cifar100-s3l"])
def test_shipped_s3l_protocols_load_and_are_listed(name, capsys):
    p = protocol.load(name)
    stages = p.train.stages
    assert stages[-1].resolution == p.dataset.resolution and stages[0].resolution < p.dataset.resolution
    assert p.backbone.options["small_stem"] is True
    assert main(["list"]) == 0
    assert name in capsys.readouterr().out
