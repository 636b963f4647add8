"""The workflows run what they say: the test workflow runs README's test command, and the leaderboard workflow
is triggered by every file that the checks of a submitted result depend on."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())[:2]


def test_the_test_workflow_runs_readmes_test_command():
    test_command = readme_commands()[1].removeprefix(". .venv/bin/activate && ")
    workflow = (ROOT / ".github/workflows/tests.yml").read_text()
    assert test_command in workflow
    assert "pull_request" in workflow


def test_ci_runs_readmes_two_commands():
    ci = (ROOT / ".ci/run").read_text()
    for command in readme_commands():
        assert command in ci


def test_the_leaderboard_workflow_watches_what_the_result_checks_read():
    paths = re.findall(r'^\s+- "([^"]+)"', (ROOT / ".github/workflows/leaderboard.yml").read_text(), flags=re.M)
    for needed in ("ssl_bench/registry.py", "ssl_bench/protocol.py", "ssl_bench/results/**", "ssl_bench/protocols/**"):
        assert needed in paths
