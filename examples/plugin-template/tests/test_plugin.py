"""Tests of the plugin, without the ssl-bench test suite: the registry accepts it, and it learns a step."""

import ssl_bench_mymethod.plugin as plugin
import torch

from ssl_bench import recipe
from ssl_bench.registry import Registry


def test_registry_finds_the_method():
    registry = Registry.discover([plugin.__name__])
    entry = registry.get("method", "mymethod")
    assert entry.plugin.version == plugin.__version__


def test_recipes_are_valid():
    for family in plugin.MyMethod.recipes:  # one line naming the key if a value is wrong
        recipe.validate(recipe.shipped(plugin.MyMethod, family), f"recipe '{family}'")


def test_loss_is_finite_and_trains():
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 32))
    backbone.feature_dim = 32
    method = plugin.MyMethod(backbone)
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    x = torch.randn(16, 3, 8, 8)
    views = [x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)]
    first = method.loss(views, None)
    assert torch.isfinite(first)
    for _ in range(20):
        opt.zero_grad()
        loss = method.loss(views, None)
        loss.backward()
        opt.step()
    assert method.loss(views, None).item() < first.item()
