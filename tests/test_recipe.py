"""Recipes (how a method is optimised) and the optimisers they name."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from ssl_bench import recipe
from ssl_bench.engine import optim
from ssl_bench.errors import UserError


def test_peak_lr_scaling_rules():
    r = recipe.validate({"lr": 0.3}, "test")
    assert r.peak_lr(512) == pytest.approx(0.6)
    assert recipe.validate({"lr": 0.3, "lr_scaling": "sqrt"}, "t").peak_lr(1024) == pytest.approx(0.6)
    assert recipe.validate({"lr": 0.3, "lr_scaling": "none"}, "t").peak_lr(1024) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"lr": float("inf")}, "finite"),
        ({"lr": -1.0}, "greater than 0"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"lerning_rate": 0.1}, "unknown recipe key 'lerning_rate'"),
        ({"betas": [0.9, 1.5]}, "betas"),
    ],
)
def test_bad_recipes_are_one_line_errors(bad, words):
    with pytest.raises(UserError, match=words) as err:
        recipe.validate(bad, "somewhere")
    assert "\n" not in str(err.value)


def test_overrides_merge_options_key_by_key(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('lr = 0.5\noptimizer = "lars"\n[options]\ntemperature = 0.1\nproj_dim = 64\n')
    over = recipe.overrides([str(f), ("options.temperature", 0.3), ("weight_decay", 1e-4)])
    assert over == {"lr": 0.5, "optimizer": "lars", "options": {"temperature": 0.3, "proj_dim": 64}, "weight_decay": 1e-4}
    merged = recipe.merge({"lr": 0.1, "options": {"queue_size": 10, "temperature": 0.2}}, over)
    assert merged["options"] == {"queue_size": 10, "temperature": 0.3, "proj_dim": 64}


def test_run_identity_changes_with_any_option():
    r = recipe.validate({"lr": 0.1, "options": {"temperature": 0.5}}, "t")
    base = recipe.run_identity(r, {}, {})
    assert base == recipe.run_identity(recipe.validate({"options": {"temperature": 0.5}, "lr": 0.1}, "t"), {}, {})
    assert base != recipe.run_identity(recipe.validate({"lr": 0.1, "options": {"temperature": 0.2}}, "t"), {}, {})
    assert base != recipe.run_identity(r, {"lam": 1.0}, {})
    assert base != recipe.run_identity(r, {}, {"order": ["a"]})


def test_schedule_warmup_then_cosine_to_zero():
    lrs = [optim.lr_at(s, 100, 10, 1.0, "cosine") for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 1e-3
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert optim.lr_at(50, 100, 0, 0.5, "constant") == 0.5


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.predictor = nn.Linear(4, 4)

    def fixed_lr_parameters(self):
        return ["predictor.weight", "predictor.bias"]


def test_param_groups_exclude_bias_and_norm_and_keep_fixed_lr_groups():
    r = recipe.validate({"weight_decay": 0.1}, "t")
    groups = optim.param_groups(_Net(), r)
    by = {(g["lars"], g["fixed_lr"]): g for g in groups}
    assert len(by[(True, False)]["params"]) == 1  # conv.weight
    assert len(by[(False, False)]["params"]) == 3  # conv.bias, bn.weight, bn.bias
    assert by[(False, False)]["weight_decay"] == 0.0 and by[(True, False)]["weight_decay"] == 0.1
    assert len(by[(True, True)]["params"]) == 1 and len(by[(False, True)]["params"]) == 1
    opt = optim.make_optimizer(_Net(), r)
    optim.set_lr(opt, 0.01, 0.5)
    assert sorted(g["lr"] for g in opt.param_groups) == [0.01, 0.01, 0.5, 0.5]
    no_excl = optim.param_groups(_Net(), recipe.validate({"exclude_bias_norm": False, "weight_decay": 0.1}, "t"))
    assert all(g["weight_decay"] == 0.1 and g["lars"] for g in no_excl)


def _lars_reference(w, g, buf, lr, wd, eta, clip, momentum, adapt):
    """One LARS step in float64 written from the formulas (You et al. 2017; solo-learn's clip_lr), element by element."""
    w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
    d = g + wd * w
    if adapt:
        wn, gn = math.sqrt((w * w).sum()), math.sqrt((g * g).sum())
        if wn > 0 and gn > 0:
            trust = eta * wn / (gn + wd * wn)
            if clip:
                trust = min(trust / lr, 1.0)
            d = d * trust
    buf = d if buf is None else momentum * buf + d
    return w - lr * buf, buf


@pytest.mark.parametrize("clip, eta, lr", [(False, 1e-3, 4.8), (True, 0.02, 0.3), (True, 0.02, 1e-4)])
def test_lars_matches_formula_over_three_steps(clip, eta, lr):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(7, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
    r = recipe.validate(
        {"optimizer": "lars", "lr": lr, "lr_scaling": "none", "weight_decay": 1e-4, "lars_eta": eta, "lars_clip": clip}, "t"
    )
    opt = optim.make_optimizer(net, r)
    optim.set_lr(opt, lr, lr)
    ref = {n: (p.detach().double().numpy().copy(), None) for n, p in net.named_parameters()}
    for step in range(3):
        x = torch.randn(16, 7)
        net.zero_grad()
        net(x).pow(2).mean().backward()
        grads = {n: p.grad.detach().double().numpy().copy() for n, p in net.named_parameters()}
        opt.step()
        for n, p in net.named_parameters():
            w, buf = ref[n]
            adapt = p.ndim > 1
            ref[n] = _lars_reference(w, grads[n], buf, lr, 1e-4 if adapt else 0.0, eta, clip, 0.9, adapt)
            np.testing.assert_allclose(
                p.detach().double().numpy(), ref[n][0], rtol=1e-5, atol=1e-7, err_msg=f"{n} after step {step}"
            )
            ref[n] = (p.detach().double().numpy().copy(), ref[n][1])


def test_a_shipped_recipe_extends_a_base_and_states_only_what_differs():
    from ssl_bench import recipe

    class M:
        recipes = {"cpu": {"extends": "lars-sqrt", "weight_decay": 1e-6, "options": {"temperature": 0.2}}}

    got = recipe.shipped(M, "cpu")
    assert "extends" not in got
    assert got["optimizer"] == "lars" and got["lr"] == 1.2 and got["lr_scaling"] == "sqrt" and got["lars_clip"] is True
    assert got["weight_decay"] == 1e-6 and got["options"] == {"temperature": 0.2}
    # the nearer base wins: lars-sqrt-smoke sets warm-up 0 over lars-sqrt's 1
    assert recipe.resolve({"extends": "lars-sqrt-smoke"}, "x")["warmup_epochs"] == 0.0


def test_an_unknown_or_cyclic_base_is_one_line(monkeypatch):
    import pytest

    from ssl_bench import recipe
    from ssl_bench.errors import UserError

    with pytest.raises(UserError, match="unknown base recipe 'lars-sqr'.*Did you mean 'lars-sqrt'"):
        recipe.resolve({"extends": "lars-sqr"}, "recipe 'cpu' of M")
    monkeypatch.setitem(recipe.BASES, "a", {"extends": "b"})
    monkeypatch.setitem(recipe.BASES, "b", {"extends": "a"})
    with pytest.raises(UserError, match="cycle"):
        recipe.resolve({"extends": "a"}, "x")
