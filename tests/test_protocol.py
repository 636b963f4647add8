import pytest

from ssl_bench import protocol
from ssl_bench.errors import UserError
from tests.conftest import TINY


def test_shipped_smoke_protocol_loads():
    p = protocol.load("smoke")
    assert p.name == "smoke" and p.version >= 1
    assert p.dataset.name == "synthetic" and p.seeds
    assert len(p.hash) == 64


def test_hash_is_canonical_and_ignores_descriptions():
    a = protocol.parse(TINY)
    reordered = protocol.parse(TINY.replace('name = "tiny"\nversion = 1', 'version = 1\nname = "tiny"'))
    described = protocol.parse('description = "words"\n' + TINY)
    assert a.hash == reordered.hash == described.hash
    changed = protocol.parse(TINY.replace("batch_size = 32", "batch_size = 16"))
    assert changed.hash != a.hash
    # the fallback recipe is each run's identity, not what the protocol compares
    assert protocol.parse(TINY.replace("lr = 0.05", "lr = 0.06")).hash == a.hash


def test_defaults_are_filled_and_hashed():
    a = protocol.parse(TINY)
    explicit = protocol.parse(TINY.replace("batch_size = 32", 'batch_size = 32\nschedule_scope = "phase"'))
    assert a.train.schedule_scope == "phase" and a.hash == explicit.hash
    assert protocol.parse(TINY.replace("batch_size = 32", 'batch_size = 32\nschedule_scope = "run"')).hash != a.hash


@pytest.mark.parametrize(
    "edit, message",
    [
        (("batch_size = 32", "batch_size = 32\nlearning_rate = 1"), "unknown key 'train.learning_rate'"),
        (("batch_size = 32", "batch_size = 32\nlr = 0.1"), "'train.lr' is part of a method's recipe"),
        (("lr = 0.05", "lr = inf"), "recipe key 'lr': must be a finite number"),
        (("epochs_per_experience = 1", "epochs_per_experiance = 1"), "Did you mean 'epochs_per_experience'"),
        (("batch_size = 32", 'batch_size = "32"'), "'train.batch_size'"),
        (("lr = 0.05", "lr = -1.0"), "recipe key 'lr'"),
        (('family = "tiny"\n', ""), "missing key 'family'"),
        (("[stream]\nn_experiences = 2", ""), "missing key 'stream'"),
        (("seeds = [0, 1]", "seeds = [0, 1"), "not valid TOML"),
    ],
)
def test_bad_protocols_get_one_line_errors(edit, message):
    with pytest.raises(UserError) as err:
        protocol.parse(TINY.replace(*edit), "tiny.toml")
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith("tiny.toml")


def test_unknown_protocol_name_suggests(tmp_path):
    with pytest.raises(UserError, match="Did you mean 'smoke'"):
        protocol.load("smok")
    with pytest.raises(UserError, match="does not exist"):
        protocol.load(str(tmp_path / "none.toml"))


def test_stages_must_sum_to_one():
    with pytest.raises(UserError, match="fractions must add up to 1"):
        protocol.parse(TINY.replace("batch_size = 32", "batch_size = 32\nstages = [{resolution = 8, fraction = 0.5}]"))


def test_extends_merges_tables_over_a_shipped_protocol():
    base = protocol.load("smoke")
    text = 'extends = "smoke"\nname = "smoke-long"\n[train]\nepochs_per_experience = 9.5\n'
    child = protocol.parse(text)
    assert child.name == "smoke-long" and child.train.epochs_per_experience == 9.5
    # the rest of [train] and every other table come from the base
    assert child.train.batch_size == base.train.batch_size and child.dataset == base.dataset
    assert child.hash != base.hash
    # the hash is of the resolved content: extending a protocol without changes is that protocol
    assert protocol.parse('extends = "smoke"').hash == base.hash


@pytest.mark.parametrize(
    "text, message",
    [
        ('extends = "smok"', "'extends' must name a shipped protocol"),
        ("extends = 3", "'extends' must name a shipped protocol"),
        ('extends = "smoke"\n[train]\nepochs = 2', "unknown key 'train.epochs'"),
    ],
)
def test_bad_extends_gets_one_line_errors(text, message):
    with pytest.raises(UserError, match=message) as err:
        protocol.parse(text, "my.toml")
    assert "\n" not in str(err.value)


def test_cpu_full_twin_has_the_cpu_protocols_compute_without_stages():
    """Claim 5 of the report compares tinyimagenet-cpu with this twin: equal estimated FLOPs, all else equal."""
    from ssl_bench.results.claims.claim_5 import _comparable, _flops

    staged, full = (protocol.load(n).model_dump(mode="json") for n in ("tinyimagenet-cpu", "tinyimagenet-cpu-full"))
    assert staged["train"]["stages"] and not full["train"]["stages"]
    assert _comparable(staged) == _comparable(full)
    assert abs(_flops(full) / _flops(staged) - 1) < 0.01


def test_cpu_domains_twin_differs_from_the_cpu_protocol_only_in_its_domains():
    """Claims 1 and 2 of the report take tinyimagenet-cpu's domain-stream runs from this twin."""
    from ssl_bench.results.claims.base import domain_twins

    base, twin = (protocol.load(n) for n in ("tinyimagenet-cpu", "tinyimagenet-cpu-domains"))
    assert twin.dataset.options["transform_domains"] is True and twin.defaults.stream == "domain"
    dumps = {p.label: p.model_dump(mode="json") for p in (base, twin, protocol.load("tinyimagenet-cpu-full"))}
    assert domain_twins(dumps) == {base.label: twin.label}


def test_keys_added_later_leave_the_hash_of_protocols_without_them_unchanged():
    """A protocol that does not set domain_protocol or train.warmup_scale hashes as before those keys existed."""
    import hashlib
    import json

    a = protocol.parse(TINY)
    content = a.model_dump(mode="json", exclude=set(protocol.UNHASHED))
    for *parents, last in protocol.HASHED_WHEN_SET:  # domain_protocol, train.warmup_scale, train/eval.precision
        table = content
        for key in parents:
            table = table[key]
        del table[last]
    before = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert a.hash == before
    assert protocol.parse('domain_protocol = "smoke"\n' + TINY).hash != a.hash
    assert protocol.parse(TINY.replace("batch_size = 32", "batch_size = 32\nwarmup_scale = 0.5")).hash != a.hash


def test_kept_versions_load_by_name_at_version_and_keep_their_hash():
    """Result files of tinyimagenet-cpu v1 (and its twins) stay valid once v2 ships: their protocol is kept."""
    kept = protocol.shipped_versions()
    assert "tinyimagenet-cpu@1" in kept and not any("@" in n for n in protocol.shipped())
    v1 = protocol.load("tinyimagenet-cpu@1")
    assert (v1.name, v1.version) == ("tinyimagenet-cpu", 1)
    # the hash of the 75 submitted result files in leaderboard/results/tinyimagenet-cpu-v1
    assert v1.hash == "6e41fdb54ce8711896c16b55ad8526a1a5d62876ca9adefc9ad55d78a29c8eec"
    assert protocol.load_shipped("tinyimagenet-cpu", 1).hash == v1.hash
    assert protocol.load_shipped("tinyimagenet-cpu", 99) is None and protocol.load_shipped("nope", 1) is None
    for name in kept:  # a kept twin extends the kept version of its base, so its hash does not move either
        p = protocol.load(name)
        assert f"{p.name}@{p.version}" == name
        current = protocol.load(p.name)
        assert current.version > p.version and current.hash != p.hash
    with pytest.raises(UserError, match="Did you mean 'tinyimagenet-cpu@1'"):
        protocol.load("tinyimagenet-cpu@11")


def test_submitted_files_of_older_versions_still_validate():
    """Once a protocol ships a new version, the leaderboard's files of the old one pass submit's checks (one per folder)."""
    from pathlib import Path

    from ssl_bench.results import submission

    board = Path(__file__).parents[1] / "leaderboard" / "results"
    folders = sorted(p for p in board.glob("*-v*") if p.is_dir()) if board.is_dir() else []
    if not folders:
        pytest.skip("no leaderboard/results in this checkout")
    kept = {f"{n.split('@')[0]}-v{n.split('@')[1]}" for n in protocol.shipped_versions()}
    assert "tinyimagenet-cpu-v1" in {f.name for f in folders} & kept
    for folder in folders:
        name, version = folder.name.rsplit("-v", 1)
        first = min(folder.glob("*/*.h5"))
        assert submission.validate(first).attrs["protocol_hash"] == protocol.load_shipped(name, int(version)).hash
