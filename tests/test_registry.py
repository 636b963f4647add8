import textwrap

import pytest

from ssl_bench.errors import UserError
from ssl_bench.registry import Registry, plugin_of_exception

GOOD = textwrap.dedent("""
    from ssl_bench import hookimpl
    __version__ = "1.2.3"

    def make(**kw):
        return kw

    @hookimpl
    def ssl_bench_methods():
        return {"mine": make}
""")


def write(tmp_path, name, text):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return path


def test_builtins_are_found_with_source_and_version():
    reg = Registry.discover()
    simclr = reg.get("method", "simclr")
    assert simclr.plugin.source == "builtin" and simclr.plugin.version != "unknown"
    assert {"instance"} <= set(reg.names("stream"))
    assert {"sequential", "joint"} <= set(reg.names("strategy"))
    assert not [p for p in reg.plugins.values() if p.error]


def test_plugin_from_file_path(tmp_path):
    reg = Registry.discover([str(write(tmp_path, "good", GOOD))])
    entry = reg.get("method", "mine")
    assert entry.plugin.version == "1.2.3" and entry.plugin.source.startswith("file ")
    assert reg.default_for("method") == "mine"


def test_plugin_from_module_name(tmp_path, monkeypatch):
    write(tmp_path, "my_installed_module", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry.discover(["my_installed_module"])
    assert reg.get("method", "mine").plugin.source == "module"


def test_plugin_from_entry_point(tmp_path, monkeypatch):
    write(tmp_path, "ep_plugin", GOOD)
    dist = tmp_path / "ep_plugin-2.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 2.0\n")
    (dist / "entry_points.txt").write_text("[ssl_bench]\nep = ep_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry.discover()
    entry = reg.get("method", "mine")
    assert entry.plugin.source == "entry point (ep-plugin)" and entry.plugin.version == "2.0"
    assert Registry.discover(["ep"]).get("method", "mine")


def test_broken_installed_plugin_is_reported_not_fatal(tmp_path, monkeypatch):
    write(tmp_path, "broken_ep", "raise RuntimeError('boom at import')")
    dist = tmp_path / "broken_ep-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-ep\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ssl_bench]\nbroken = broken_ep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry.discover()
    assert "boom at import" in reg.plugins["broken"].error
    assert reg.get("method", "simclr")  # everything else still works
    with pytest.raises(UserError, match="broken"):
        reg.load("broken")  # ...but asking for it fails


@pytest.mark.parametrize(
    "text, message",
    [
        ("from ssl_bench import hookimpl\n@hookimpl\ndef ssl_bench_methods(x):\n    return {}\n", "wrong signature"),
        (
            "from ssl_bench import hookimpl\n@hookimpl\ndef ssl_bench_method():\n    return {}\n",
            "Did you mean 'ssl_bench_methods'",
        ),
        ("from ssl_bench import hookimpl\n@hookimpl\ndef ssl_bench_methods():\n    return ['x']\n", "must return a dict"),
        ("import no_such_dependency_xyz\n", "No module named 'no_such_dependency_xyz'"),
    ],
)
def test_bad_plugin_named_by_user_is_a_user_error(tmp_path, text, message):
    path = write(tmp_path, "bad", text)
    with pytest.raises(UserError, match=message) as err:
        Registry.discover([str(path)])
    assert "plugin 'bad'" in str(err.value) and "\n" not in str(err.value)


def test_unknown_names_suggest():
    reg = Registry.discover()
    with pytest.raises(UserError, match="Did you mean 'simclr'"):
        reg.get("method", "simclrr")
    with pytest.raises(UserError, match="no plugin named 'definitely_missing'"):
        reg.load("definitely_missing")
    with pytest.raises(UserError, match="does not exist"):
        reg.load("missing_file.py")


def test_exception_inside_plugin_code_names_the_plugin(tmp_path):
    path = write(
        tmp_path,
        "crashy",
        """
        from ssl_bench import hookimpl
        def make(**kw):
            raise ValueError("bad thing")
        @hookimpl
        def ssl_bench_methods():
            return {"crashy": make}
    """,
    )
    reg = Registry.discover([str(path)])
    with pytest.raises(ValueError) as err:
        reg.get("method", "crashy").factory()
    assert plugin_of_exception(err.value).startswith("plugin 'crashy' (crashy.py:")


@pytest.mark.parametrize(
    "kind, name",
    [
        ("method", "x</script><script>alert(1)</script>"),
        ("method", "a|b"),
        ("stream", "-rf"),
        ("method", "two words"),
        ("strategy", "replay+mas"),
        ("method", "x" * 65),
        ("evaluator", ""),
    ],
)
def test_names_outside_the_pattern_are_refused_at_registration(tmp_path, kind, name):
    hook = {
        "method": "ssl_bench_methods",
        "stream": "ssl_bench_streams",
        "strategy": "ssl_bench_strategies",
        "evaluator": "ssl_bench_evaluators",
    }[kind]
    path = write(
        tmp_path,
        "badname",
        f"""
        from ssl_bench import hookimpl
        __version__ = "1.0"

        @hookimpl
        def {hook}():
            return {{{name!r}: dict}}
    """,
    )
    with pytest.raises(UserError) as err:
        Registry.discover([str(path)])
    message = str(err.value)
    assert "\n" not in message and "plugin 'badname'" in message and f"{kind} name" in message and "is not allowed" in message


def test_names_with_dots_plus_and_dashes_are_fine(tmp_path):
    path = write(
        tmp_path,
        "okname",
        """
        from ssl_bench import hookimpl
        __version__ = "1.0"

        @hookimpl
        def ssl_bench_methods():
            return {"My_method-2.0+x": dict}
    """,
    )
    assert Registry.discover([str(path)]).get("method", "My_method-2.0+x")


def test_an_installed_plugin_with_a_bad_name_is_skipped_with_one_warning(tmp_path, monkeypatch, caplog):
    write(
        tmp_path,
        "ep_evil",
        """
        from ssl_bench import hookimpl
        __version__ = "1.0"

        @hookimpl
        def ssl_bench_methods():
            return {"<img src=x onerror=alert(1)>": dict}
    """,
    )
    dist = tmp_path / "ep_evil-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-evil\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ssl_bench]\nevil = ep_evil\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level("WARNING"):
        reg = Registry.discover()
    assert "<img src=x onerror=alert(1)>" not in reg.names("method") and reg.plugins["evil"].error
    [line] = [r.getMessage() for r in caplog.records if "evil" in r.getMessage()]
    assert "plugin 'evil'" in line and "is not allowed" in line


def test_every_builtin_name_matches_the_pattern():
    """Read the names from the built-ins' hooks themselves: the registry would drop a plugin with a bad name
    (as broken) before its names could be checked among the registered ones."""
    import importlib
    import pkgutil

    from ssl_bench.names import NAME_PATTERN
    from ssl_bench.registry import BUILTIN_PACKAGE, KINDS

    reg = Registry.discover()
    assert not [p.name for p in reg.plugins.values() if p.error], "a built-in plugin failed to load"
    package = importlib.import_module(BUILTIN_PACKAGE)
    names = []
    for folder in pkgutil.iter_modules(package.__path__):
        sub = importlib.import_module(f"{BUILTIN_PACKAGE}.{folder.name}")
        for mod in pkgutil.iter_modules(sub.__path__):
            module = importlib.import_module(f"{sub.__name__}.{mod.name}")
            names += [name for hook in KINDS.values() if hasattr(module, hook) for name in getattr(module, hook)()]
    assert len(names) >= 40 and all(NAME_PATTERN.fullmatch(name) for name in names)
    assert sorted(names) == sorted(n for kind in KINDS for n in reg.names(kind))
