"""Plugin options: listed from the factory's signature, and bad ones refused in one line before any data is loaded."""

import pytest

from ssl_bench import options
from ssl_bench.cli import main
from ssl_bench.engine import build
from ssl_bench.registry import Registry
from tests.test_cli import run_cli


@pytest.fixture
def no_data(monkeypatch):
    """Loading data fails the test: these errors must come before it."""

    def load_data(*args, **kwargs):
        raise AssertionError("data was loaded before the options were checked")

    monkeypatch.setattr(build, "load_data", load_data)


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("ssl-bench: error:"), err
    return err[-1]


def test_list_options_shows_types_and_defaults(capsys):
    assert main(["list", "--options", "simclr"]) == 0
    out = capsys.readouterr().out
    assert "method simclr (plugin simclr, builtin)" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  ") and len(line.split()) == 3}
    assert rows["temperature"] == ["float", "0.5"] and rows["proj_dim"] == ["int", "128"]
    # the recipe's optimiser and learning rate (as shipped, its base resolved), not only the options it sets
    from ssl_bench import recipe
    from ssl_bench.registry import Registry

    cpu = recipe.validate(recipe.shipped(Registry.discover().get("method", "simclr").factory, "cpu"), "cpu")
    assert f"  recipe 'cpu': {cpu.optimizer} lr {cpu.lr:g} x batch/256; weight decay {cpu.weight_decay:g}; " in out
    assert "temperature=0.2" in out
    assert main(["list", "--options", "replay"]) == 0
    assert "policy" in capsys.readouterr().out
    assert main(["list", "--options", "simclrr"]) == 2
    assert "Did you mean 'simclr'" in error_line(capsys)


def test_options_of_skips_engine_arguments():
    registry = Registry.discover()
    assert list(options.options_of(registry.get("stream", "instance")).options) == []
    assert "backbone" not in options.options_of(registry.get("method", "simclr")).options
    assert "root" not in options.options_of(registry.get("dataset", "synthetic")).options


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--method-opt", "temperature=hot"], "option 'temperature' must be float, got 'hot'"),
        (["--method-opt", "proj_dim=12.5"], "option 'proj_dim' must be int, got 12.5 (float)"),
        (["--method-opt", "temprature=0.1"], "has no option 'temprature'"),
        (["--recipe", "options.temprature=0.1"], "Did you mean 'temperature'"),
        (["--strategy", "replay", "--strategy-opt", "sise=10"], "Did you mean 'size'"),
        (["--strategy", "replay+mas", "--strategy-opt", "lam=0.1"], "prefix the option with its strategy's name"),
        (["--strategy", "replay+mas", "--strategy-opt", "mas.lam=high"], "strategy 'mas': option 'lam' must be float"),
        (["--seed", "-1"], "--seed must be an integer from 0"),
        (["--recipe", "lr=inf"], "recipe key 'lr': must be a finite number"),
    ],
)
def test_bad_options_fail_before_data_loads(args, expect, tiny_protocol, tmp_path, no_data, capsys):
    assert main(["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path), *args]) == 2
    line = error_line(capsys)
    assert expect in line, line
    if "Did you mean" in expect or "no option" in expect:
        assert "Did you mean" in line
    assert not list(tmp_path.glob("*.h5"))


@pytest.mark.parametrize(
    "edit, expect",
    [
        (("n_domains = 4", "n_domain = 4"), "dataset 'synthetic' has no option 'n_domain'"),
        (("width = 0.125", "width = 'wide'"), "backbone 'resnet18': option 'width' must be float"),
        (("[eval]", "[eval]\noptions = { linear = { l2_gird = [0.1] } }"), "evaluator 'linear' has no option 'l2_gird'"),
    ],
)
def test_bad_protocol_options_fail_before_data_loads(edit, expect, tiny_protocol, tmp_path, no_data, capsys):
    tiny_protocol.write_text(tiny_protocol.read_text().replace(*edit))
    assert main(["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path)]) == 2
    assert expect in error_line(capsys)


def test_sweep_checks_every_run_before_starting(tiny_protocol, tmp_path, no_data, capsys):
    args = ["-q", "sweep", "--protocol", str(tiny_protocol), "--methods", "simclr,byol", "--out", str(tmp_path)]
    assert main([*args, "--method-opt", "temperature=0.2"]) == 2  # byol has no temperature
    assert "method 'byol' has no option 'temperature'" in error_line(capsys)
    assert main([*args, "--seeds", "0,-3"]) == 2
    assert "a seed is an integer from 0" in error_line(capsys)


def test_typed_option_error_is_one_line_exit_2(tiny_protocol, tmp_path):
    code, _, stderr = run_cli("run", "--protocol", tiny_protocol, "--out", tmp_path, "--method-opt", "temperature=hot")
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


def test_negative_temperature_is_refused_by_the_method(tiny_protocol, tmp_path, capsys):
    assert main(["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path), "--method-opt", "temperature=-0.5"]) == 2
    assert "simclr: need temperature > 0" in error_line(capsys)


def test_more_experiences_than_the_data_supports_are_refused(tiny_protocol, tmp_path, capsys):
    tiny_protocol.write_text(tiny_protocol.read_text().replace("n_experiences = 2", "n_experiences = 50"))
    assert main(["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert "experiences too small" in line and "fewer than one batch (32)" in line and "n_experiences = 50" in line


def test_shipped_recipes_and_protocols_pass_the_check():
    from ssl_bench import protocol as protocols

    registry = Registry.discover()
    for name, entry in registry.entries["method"].items():
        for family, recipe in (getattr(entry.factory, "recipes", None) or {}).items():
            options.check(entry, recipe.get("options", {}), f"{name} recipe {family}")
    for name in protocols.shipped():
        proto = protocols.load(name)
        for stream, values in proto.stream.options.items():
            options.check(registry.get("stream", stream), values, name)
        options.check(registry.get("dataset", proto.dataset.name), proto.dataset.options, name)
        options.check(registry.get("backbone", proto.backbone.name), proto.backbone.options, name)
        for evaluator in proto.eval.evaluators:
            options.check(registry.get("evaluator", evaluator), proto.eval.options.get(evaluator, {}), name)
