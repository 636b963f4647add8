"""CONTRIBUTING.md's path, start to finish, with a packaged plugin outside the repository, through the
leaderboard workflow's own script (``.ci/leaderboard``), in a temporary ssl-bench checkout.

The checkout is a copy of this working tree (its code, plugins and the CI script; an empty leaderboard) plus a
tiny shipped protocol, committed as the pull request's base; the commands run that checkout's code (on
PYTHONPATH, as ``pip install -e`` of it would). The plugin is ``examples/plugin-template`` built as a wheel: the
contributor's environment has it installed, the workflow's gets it only from ``leaderboard/plugins.txt``
(``pip install --no-deps`` from a local folder of wheels standing in for PyPI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
#: what the checkout needs of this working tree (the rest of the repository plays no part in the path)
COPIED = ("ssl_bench", "plugins", "pyproject.toml", ".ci", "examples/plugin-template", "leaderboard/plugins.txt")
#: a tiny protocol of a CPU family (so verify re-runs it), its probe at a fixed L2 (no selection: seconds)
PROTOCOL = (
    TINY.replace('name = "tiny"', 'name = "tiny-ci"').replace('family = "tiny"', 'family = "cpu"')
    + "\n[eval.options.linear]\nl2 = 1e-4\nmax_iter = 50\n"
)


def sh(cmd: list[str], cwd: Path, env: dict[str, str], expect: int = 0) -> subprocess.CompletedProcess:
    import time

    t0 = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    print(f"{time.time() - t0:6.1f} s  {' '.join(cmd)[:100]}")
    assert proc.returncode == expect, f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_packaged_plugin_walks_contributing_path_through_the_workflow_script(tmp_path):
    checkout, overlay, dev_site, wheels = (tmp_path / d for d in ("ssl-bench", "overlay", "dev-site", "wheels"))
    for item in COPIED:
        source, dest = REPO / item, checkout / item
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
    (checkout / "ssl_bench" / "protocols" / "tiny-ci.toml").write_text(PROTOCOL)
    (checkout / "leaderboard" / "results").mkdir(parents=True)
    (checkout / "leaderboard" / "results" / ".gitkeep").write_text("")
    overlay.mkdir()
    (overlay / "ssl_bench").symlink_to(checkout / "ssl_bench")
    (overlay / "ssl_bench_plugins").symlink_to(checkout / "plugins")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHON": sys.executable,
        "PYTHONPATH": str(overlay),
        "OMP_NUM_THREADS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    git = lambda *a: sh(["git", *a], checkout, env)  # noqa: E731
    ssl_bench = lambda *a, expect=0, env=env: sh(["ssl-bench", "-q", *a], checkout, env, expect)  # noqa: E731
    ssl_bench("leaderboard", "-o", "leaderboard/README.md")
    ssl_bench("leaderboard", "-o", "leaderboard/index.html")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "base")
    base = git("rev-parse", "HEAD").stdout.strip()

    # 1-2. the template, packaged (a wheel; installed in the contributor's environment)
    package = tmp_path / "ssl-bench-mymethod"
    shutil.copytree(REPO / "examples" / "plugin-template", package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q"]
    sh([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(package)], tmp_path, env)
    sh([*pip, "install", "--no-deps", "--target", str(dev_site), *map(str, wheels.glob("*.whl"))], tmp_path, env)
    dev = {**env, "PYTHONPATH": f"{dev_site}{os.pathsep}{overlay}"}

    # 3-4. the pre-flight trains every seed and keeps the runs, so the sweep finds them finished
    checked = ssl_bench("check", "--plugin", "mymethod", "--protocol", "tiny-ci", "--out", "runs", env=dev).stdout
    assert "✓ runs: method mymethod" in checked and "\nverdict: " in checked and "learns (gain over random init)" in checked
    made = sorted(str(p.relative_to(checkout)) for p in (checkout / "runs").glob("tiny-ci-v1__mymethod__*.h5"))
    assert len(made) == 2
    before = [(checkout / p).stat().st_mtime_ns for p in made]
    swept = ssl_bench("sweep", "--protocol", "tiny-ci", "--methods", "mymethod", "--seeds", "all", "--out", "runs", env=dev)
    assert sorted(swept.stdout.split()) == [str(Path("runs") / Path(p).name) for p in made]
    assert [(checkout / p).stat().st_mtime_ns for p in made] == before  # nothing trained again

    # 5. submit refuses what CI could not load, naming the fix; pinned, it copies into this checkout
    refused = ssl_bench("submit", *made, expect=2, env=dev)
    assert "leaderboard/plugins.txt" in refused.stderr and "ssl-bench-mymethod==0.1.0" in refused.stderr
    assert not list((checkout / "leaderboard" / "results").rglob("*.h5"))
    with open(checkout / "leaderboard" / "plugins.txt", "a") as f:
        f.write("ssl-bench-mymethod==0.1.0\n")
    accepted = ssl_bench("submit", *made, env=dev)
    assert f"submitted to {checkout.resolve() / 'leaderboard' / 'results'}" in accepted.stdout
    assert len(list((checkout / "leaderboard" / "results" / "tiny-ci-v1" / "mymethod").glob("*.h5"))) == 2
    ssl_bench("leaderboard", "-o", "leaderboard/README.md", env=dev)
    ssl_bench("leaderboard", "-o", "leaderboard/index.html", env=dev)
    git("add", "leaderboard")
    git("commit", "-q", "-m", "mymethod on tiny-ci")

    # 6. the workflow's script, in an environment without the plugin: it installs it from plugins.txt
    ci = {**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    out = sh(["bash", ".ci/leaderboard", base], checkout, ci).stdout
    assert out.count("valid: ") == 2 and "leaderboard: all checks passed" in out
    rerun = [line for line in out.splitlines() if line.startswith(("reproduced: ", "skipped: "))]
    assert len(rerun) == 2, out
    assert sum("one seed per configuration" in line for line in rerun) == 1  # the other seed, said so
    [chosen] = [line for line in rerun if "one seed per configuration" not in line]
    assert chosen.startswith("reproduced: "), chosen

    # the same script fails a pull request whose tables were not regenerated
    (checkout / "leaderboard" / "README.md").write_text("stale\n")
    git("commit", "-q", "-am", "stale table")
    failed = sh(["bash", ".ci/leaderboard", base], checkout, ci, expect=1)
    assert "is not what the result files give" in failed.stdout + failed.stderr


def test_verify_reruns_one_seed_per_configuration_within_a_budget(tmp_path, capsys):
    """What the workflow's re-run step says about each file: the drawn seed, the others, the budget."""
    from ssl_bench.cli import main
    from tests.test_leaderboard import make_result

    runs = [make_result(tmp_path, "simclr", "instance", "sequential", seed) for seed in (0, 1, 2)]
    runs.append(make_result(tmp_path, "simclr", "instance", "joint", 0))
    assert main(["verify", "--one-per-configuration", "--budget", "0", *map(str, runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    skipped = [line for line in lines if line.startswith("skipped: ")]
    assert len(skipped) == 4 and lines[-1] == "verify: 0 re-run(s) reproduced, 0 failed, 4 skipped"
    others = [line for line in skipped if "one seed per configuration" in line]
    assert len(others) == 2 and all("sequential was drawn" in line for line in others)
    budget = [line for line in skipped if "within the 0-minute budget" in line]
    assert len(budget) == 2  # the drawn sequential seed and the joint run
