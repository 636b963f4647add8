"""Downstream transfer (PACS-like multidomain folders made here, never the real PACS) and the protocols that use it."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ssl_bench import protocol
from ssl_bench.engine.build import Run
from ssl_bench.engine.loop import schedule_of
from ssl_bench.errors import UserError
from ssl_bench.plan import RunConfig, make_plan
from ssl_bench.registry import Registry
from ssl_bench_plugins.evaluators import downstream

pytestmark = pytest.mark.usefixtures("one_thread")

DOMAINS = ("photo", "art_painting", "cartoon", "sketch")
CLASSES = ("dog", "elephant", "giraffe")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(downstream.ROOT_ENV, raising=False)


def pacs_like(root, n=8, size=20, domains=DOMAINS, classes=CLASSES):
    """``root/<domain>/<class>/*.jpg``: a class is a colour, a domain a brightness and a pattern; PACS-like names."""
    rng = np.random.default_rng(0)
    for d, domain in enumerate(domains):
        for c, name in enumerate(classes):
            folder = root / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.zeros((size, size, 3), dtype=np.uint8)
                pixels[..., c % 3] = 120 + 40 * d
                pixels[:: 2 + d] += rng.integers(0, 60, (len(range(0, size, 2 + d)), size, 3), dtype=np.uint8)
                mode = "L" if domain == "sketch" else "RGB"  # PACS sketches are grey
                Image.fromarray(pixels).convert(mode).save(folder / f"pic_{i:03d}.jpg", quality=95)
    return root


def fake_run(data_root=None, resolution=16):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * resolution * resolution, 16))
    backbone.feature_dim = 16
    return SimpleNamespace(
        registry=Registry.discover(),
        dataset=SimpleNamespace(resolution=resolution),
        protocol=SimpleNamespace(
            dataset=SimpleNamespace(root=None), eval=SimpleNamespace(precision="fp32", channels_last=False, batch_size=64)
        ),
        method=SimpleNamespace(backbone=backbone),
        config=SimpleNamespace(download=False, progress=False, data_root=data_root),
        device=torch.device("cpu"),
    )


PACS = [
    {"label": "pacs_photo", "name": "multidomain", "root": "pacs", "options": {"domains": ["photo"]}},
    {"label": "pacs", "name": "multidomain", "root": "pacs", "tasks": ["fewshot"]},
]


def test_relative_roots_are_found_next_to_the_pretraining_data_or_in_the_env_folder(tmp_path, monkeypatch):
    pacs_like(tmp_path / "data" / "pacs", n=4)
    (tmp_path / "data" / "tiny").mkdir()
    ev = downstream.Downstream(datasets=PACS, l2="select", fewshot={"n_way": 3, "shots": [2], "episodes": 3})
    ev.setup(fake_run(data_root=str(tmp_path / "data" / "tiny")))  # the parent of --data-root holds pacs/
    assert [label for label, _, _ in ev.loaded] == ["pacs_photo", "pacs"]
    assert ev.loaded[0][2].domains == ["photo"] and ev.loaded[1][2].domains == sorted(DOMAINS)
    with pytest.raises(UserError) as err:  # elsewhere: one line naming the folder and the fix
        ev.setup(fake_run(data_root=str(tmp_path / "tiny")))
    text = str(err.value)
    assert "\n" not in text and str(tmp_path / "pacs") in text and downstream.ROOT_ENV in text
    monkeypatch.setenv(downstream.ROOT_ENV, str(tmp_path / "data"))
    ev.setup(fake_run(data_root=str(tmp_path / "tiny")))
    assert len(ev.loaded) == 2


def test_linear_with_selected_l2_and_fewshot_per_domain(tmp_path):
    pacs_like(tmp_path / "pacs", n=10)
    grid = (1e-4, 1e-2)
    ev = downstream.Downstream(
        datasets=[{**s, "root": str(tmp_path / "pacs")} for s in PACS],
        l2="select",
        l2_grid=grid,
        fewshot={"n_way": 3, "shots": [1, 5], "n_query": 4, "episodes": 20},
    )
    run = fake_run()
    ev.setup(run)
    out = ev.evaluate(run, None, None)
    assert out["pacs_photo/l2"] in grid and 0 <= out["pacs_photo/acc"] <= 1
    for k in (1, 5):
        per_domain = [out[f"pacs/acc_{k}shot_{d}"] for d in DOMAINS]
        assert all(0 <= a <= 1 for a in per_domain) and all(f"pacs/ci95_{k}shot_{d}" in out for d in DOMAINS)
        assert out[f"pacs/acc_{k}shot"] == pytest.approx(np.mean(per_domain))
    # the classes are colours: even a random linear embedding separates them in every domain
    assert min(out[f"pacs/acc_5shot_{d}"] for d in DOMAINS) > 0.9
    assert out == ev.evaluate(run, None, None)  # seeded episodes, deterministic probes
    assert "pacs/acc" not in out and "pacs_photo/acc_5shot" not in out  # each dataset does its own tasks only


def test_fewshot_that_a_domain_cannot_fill_fails_at_setup(tmp_path):
    pacs_like(tmp_path / "pacs", n=3)
    ev = downstream.Downstream(
        datasets=[{"name": "multidomain", "root": str(tmp_path / "pacs"), "tasks": ["fewshot"]}],
        fewshot={"n_way": 3, "shots": [5]},
    )
    with pytest.raises(UserError, match="domain 'art_painting'.*3-way 5-shot"):
        ev.setup(fake_run())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"l2": "best"}, "l2 must be"),
        ({"l2": "select", "l2_grid": ()}, "l2_grid"),
        ({"fewshot": {"ways": 5}}, "unknown fewshot option 'ways'"),
        ({"fewshot": {"classifier": "svm"}}, "classifier"),
        ({"datasets": [{"name": "multidomain", "tasks": ["detection"]}]}, "'tasks' must list"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        downstream.Downstream(**{"datasets": PACS, **kwargs})


# ------------------------------------------------------------------ the protocols that use PACS
def test_tinyimagenet_cpu_v2_is_v1_plus_transfer_domain_protocol_and_probe_sharpness():
    v1, v2 = protocol.load("tinyimagenet-cpu@1"), protocol.load("tinyimagenet-cpu@2")
    assert (v1.version, v2.version) == (1, 2) and v2.domain_protocol == "pacs-cpu"
    assert v2.domain_protocol in protocol.shipped() and protocol.load(v2.domain_protocol).defaults.stream == "domain"
    a, b = v1.model_dump(mode="json"), v2.model_dump(mode="json")
    assert b["eval"]["evaluators"] == a["eval"]["evaluators"] + ["downstream"]
    assert b["eval"]["options"]["sharpness"] == {**a["eval"]["options"]["sharpness"], "probe": True, "probe_batch_size": 64}
    assert (
        b["train"]["precision"] == "bf16"
        and b["eval"]["channels_last"]
        and b["eval"]["options"]["linear"] == {"solver": "lbfgs32"}
    )
    for key in ("version", "domain_protocol", "eval"):
        a.pop(key), b.pop(key)
    a["train"].pop("precision"), b["train"].pop("precision")
    assert a == b  # data, stream, backbone, budget, seeds: as v1 (bf16 and the float32 probe: the cost issue's)


def test_tinyimagenet_cpu_v3_is_v2_with_the_cheaper_evaluation_and_its_twins_follow():
    v2, v3 = protocol.load("tinyimagenet-cpu@2"), protocol.load("tinyimagenet-cpu")
    assert v3.version == 3 and v2.hash.startswith("a61382a89ba4")  # the kept version keeps its files' hash
    a, b = v2.model_dump(mode="json"), v3.model_dump(mode="json")
    assert b["eval"]["precision"] == "bf16" and a["eval"]["precision"] == "fp32"
    loss32 = {"solver": "lbfgs32", "select_by": "loss"}
    assert b["eval"]["options"]["linear"] == loss32
    assert b["eval"]["options"]["downstream"] == {**a["eval"]["options"]["downstream"], **loss32}
    assert b["eval"]["options"]["sharpness"] == {**a["eval"]["options"]["sharpness"], **loss32, "n_probes": 2}
    for d in (a, b):
        d.pop("version"), d["eval"].pop("precision"), d["eval"].pop("options")
    assert a == b  # training, data, evaluators and their other options: v2's
    twins = (
        "tinyimagenet-cpu-domains",
        "tinyimagenet-cpu-full",
        "tinyimagenet-cpu-d10",
        "tinyimagenet-cpu-d30",
        "tinyimagenet-cpu-w050",
    )
    for name in twins:
        current = protocol.load(name)
        kept = protocol.load(f"{name}@{current.version - 1}")
        assert current.eval == v3.eval and kept.eval == v2.eval, name  # each twin's kept version: v2's evaluation


def test_the_v2_downstream_options_find_pacs_next_to_the_data_root(tmp_path):
    classes = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
    pacs_like(tmp_path / "pacs-64", n=7, size=8, classes=classes)
    (tmp_path / "tiny-imagenet-100").mkdir()
    options = dict(
        protocol.load("tinyimagenet-cpu").eval.options["downstream"],
        fewshot={"n_way": 7, "shots": [5], "n_query": 1, "episodes": 2},
    )
    ev = downstream.Downstream(**options)
    run = fake_run(data_root=str(tmp_path / "tiny-imagenet-100"), resolution=8)
    ev.setup(run)
    out = ev.evaluate(run, None, None)
    assert {"pacs_photo/acc", "pacs_photo/l2", "pacs/acc_5shot"} <= set(out)
    assert {f"pacs/acc_5shot_{d}" for d in DOMAINS} <= set(out)


def steps_of(p) -> tuple[int, int]:
    """(steps per experience, joint steps) from a Tiny ImageNet protocol's numbers, as the engine counts them."""
    per_experience = len(p.dataset.options["classes"]) * p.dataset.options["train_per_class"] // p.stream.n_experiences
    e, b = p.train.epochs_per_experience, p.train.batch_size
    return math.ceil(e * per_experience / b), p.stream.n_experiences * math.ceil(e * per_experience / b)


@pytest.mark.parametrize(
    "name, changed",
    [
        ("tinyimagenet-cpu-d10", {("dataset", "options", "train_per_class"): 30}),
        ("tinyimagenet-cpu-d30", {("dataset", "options", "train_per_class"): 90}),
        ("tinyimagenet-cpu-w050", {("backbone", "options", "width"): 0.5}),
    ],
)
def test_data_and_width_twins_change_one_thing_and_train_as_many_steps(name, changed):
    base, twin = protocol.load("tinyimagenet-cpu"), protocol.load(name)
    assert steps_of(twin) == steps_of(base) == (235, 940)
    a, b = base.model_dump(mode="json"), twin.model_dump(mode="json")
    for path, value in changed.items():
        table = b
        for key in path[:-1]:
            table = table[key]
        assert table[path[-1]] == value
        table[path[-1]] = _get(a, path)
    for p in (a, b):
        for key in ("name", "version", "description"):
            p.pop(key)
        p["train"].pop("epochs_per_experience"), p["train"].pop("warmup_scale")
    assert a == b
    if twin.train.warmup_scale is not None:  # the same warm-up share: scale = epochs / the base's epochs
        assert twin.train.warmup_scale == pytest.approx(twin.train.epochs_per_experience / base.train.epochs_per_experience)


@pytest.mark.parametrize("k", [2, 4, 6])
def test_budget_twins_train_k_times_the_steps_with_the_same_warmup_share(k):
    base, twin = protocol.load("tinyimagenet-cpu"), protocol.load(f"tinyimagenet-cpu-steps{k}")
    per_experience = math.ceil(4 * k * 7500 / 128)  # 469, 938, 1407: the base ceils 234.4 to 235
    assert steps_of(twin) == (per_experience, 4 * per_experience)
    assert twin.train.warmup_scale == k and twin.eval == base.eval
    a, b = base.model_dump(mode="json"), twin.model_dump(mode="json")
    for p in (a, b):
        for key in ("name", "version", "description"):
            p.pop(key)
        p["train"].pop("epochs_per_experience"), p["train"].pop("warmup_scale")
    assert a == b


def _get(d, path):
    for key in path:
        d = d[key]
    return d


def test_pacs_cpu_builds_its_domain_stream_on_generated_files(tmp_path):
    """pacs-cpu on a PACS-like folder: four experiences photo -> art_painting -> cartoon -> sketch, 15 epochs each."""
    pacs_like(tmp_path / "pacs", n=55, size=8)  # 44 of each class folder's 55 train (11 held out): 132 > one batch
    p = protocol.load("pacs-cpu")
    assert p.defaults.stream == "domain" and p.seeds == [0, 1, 2] and p.train.warmup_scale == 15 / 4
    config = RunConfig(
        protocol=p,
        method="simclr",
        stream="domain",
        strategy="sequential",
        seed=0,
        out=tmp_path / "runs",
        data_root=str(tmp_path / "pacs"),
        progress=False,
    )
    run = Run(make_plan(config, Registry.discover()))
    assert [run.dataset.domains[e.domains[0]] for e in run.experiences] == list(DOMAINS)
    assert all(e.classes == [0, 1, 2] for e in run.experiences)
    assert [len(e.train_idx) for e in run.experiences] == [132] * 4
    assert [ph.steps for ph in run.phases] == [math.ceil(15 * 132 / 128)] * 4
    assert run.dataset.train.images.shape[1:] == (3, 32, 32)
    for i, phase in enumerate(run.phases):  # 0.4 recipe epochs x 15 / 4 of 132 images at batch 128
        run.phase_index = i
        assert schedule_of(run, phase)[2] == round(0.4 * 3.75 * 132 / 128) == 2
