"""Shared fixtures: a tiny protocol that trains in seconds on generated data."""

import textwrap

import pytest

TINY = textwrap.dedent("""
    name = "tiny"
    version = 1
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
    lr = 0.05

    [eval]
    probe_train_per_experience = 0
""")


@pytest.fixture
def tiny_protocol(tmp_path):
    """Path to a protocol file for a run of a few seconds (2 experiences, 16 px, tiny ResNet)."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path
