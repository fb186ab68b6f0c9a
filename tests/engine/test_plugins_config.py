"""Strategy/miniport registries with entry-point plugins, and the TOML configuration with named variants."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ndis_replay.engine.config import load_config, parse_config, resolve_miniport, resolve_strategy
from ndis_replay.engine.miniports import MINIPORTS, get_miniport
from ndis_replay.engine.miniports.loopback import LoopbackMiniport, LoopbackParams
from ndis_replay.engine.plugins import PluginWarning
from ndis_replay.engine.strategies import STRATEGIES, available, get_strategy
from ndis_replay.engine.strategies.reuse import ReuseParams, ReuseStrategy
from ndis_replay.errors import ConfigError, ExitCode

PLUGIN_MODULE = '''
"""A third-party strategy package (test fixture)."""
from __future__ import annotations

from ndis_replay.engine.strategies.reuse import ReuseStrategy


class DeepReuse(ReuseStrategy):
    """reuse, published by a plugin."""

    name = "deep-reuse"
    summary = "a plugin's reuse"


class NotAStrategy:
    name = "not-a-strategy"
'''

ENTRY_POINTS = """
[ndis_replay.strategies]
deep-reuse = ndis_test_plugin:DeepReuse
broken = ndis_test_plugin_missing:Nope
not-a-strategy = ndis_test_plugin:NotAStrategy
reuse = ndis_test_plugin:DeepReuse
"""


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real installed distribution on sys.path: a module and a dist-info with entry_points.txt."""
    (tmp_path / "ndis_test_plugin.py").write_text(PLUGIN_MODULE)
    info = tmp_path / "ndis_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ndis-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    STRATEGIES.reload()
    yield tmp_path
    monkeypatch.undo()
    STRATEGIES.reload()


def test_builtins() -> None:
    assert available()[:7] == ["ndis5-alloc", "ndis5-reuse", "alloc", "reuse", "copy", "cache", "clone"]
    for name in available()[:7]:
        cls = get_strategy(name)
        assert cls.name == name and cls.ndis_version in (5, 6) and cls.summary and cls.describe()
        for field_name, (_, help_text) in cls.Params.field_docs().items():
            assert help_text, f"{name}.{field_name} has no help"
    assert MINIPORTS.available() == ["loopback", "tap"]
    assert get_miniport("loopback") is LoopbackMiniport


def test_plugins_load_and_broken_ones_warn(plugin_dist: Path) -> None:
    with pytest.warns(PluginWarning) as caught:
        names = available()
    assert "deep-reuse" in names
    assert get_strategy("deep-reuse").__name__ == "DeepReuse"
    assert get_strategy("reuse") is ReuseStrategy  # a plugin cannot take a built-in's name
    skipped = dict(STRATEGIES.skipped)
    assert set(skipped) == {"broken", "not-a-strategy", "reuse"}
    assert "ModuleNotFoundError" in skipped["broken"]
    assert {w.message.name for w in caught} == {"broken", "not-a-strategy", "reuse"}  # type: ignore[union-attr]
    # the plugin replays like a built-in
    from tests.engine.driver import calls_from_frames, replay

    sends = calls_from_frames([bytes(range(60))] * 3, [14] * 3)
    run = replay(get_strategy("deep-reuse")(), sends)
    assert run.findings == [] and run.first_wire_mismatch(sends) is None


def test_unknown_names() -> None:
    with pytest.raises(ConfigError) as error:
        get_strategy("resue")
    assert (error.value.what, error.value.value) == ("strategy", "resue")
    assert "reuse" in error.value.choices
    assert error.value.exit_code == ExitCode.USAGE
    with pytest.raises(ConfigError) as error:
        get_miniport("tap0")
    assert error.value.choices == ("loopback", "tap")


def test_params_validation() -> None:
    with pytest.raises(ConfigError) as error:
        ReuseStrategy(ReuseParams(pool_depth=-1))
    assert error.value.what == "pool_depth"
    with pytest.raises(ConfigError) as error:
        ReuseStrategy(ReuseParams(header="front"))
    assert error.value.choices == ("whole", "split", "retreat")
    alloc = get_strategy("alloc")
    with pytest.raises(ConfigError) as error:
        alloc(alloc.Params(context_size=20))  # not a multiple of MEMORY_ALLOCATION_ALIGNMENT
    assert error.value.what == "context_size"
    with pytest.raises(ConfigError):
        LoopbackMiniport(LoopbackParams(mtu=10))


GOOD = """
[strategy.reuse]
pool_depth = 256

[strategy.reuse-deep]
base = "reuse"
pool_depth = 4096
mdl_reuse = true

[strategy.alloc-flat]
base = "alloc"
split_header = false

[miniport.loopback]
backfill = 16
"""


def test_variants(tmp_path: Path) -> None:
    path = tmp_path / "cfg.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.variants() == {"reuse-deep": "reuse", "alloc-flat": "alloc"}
    assert config.strategy_names()[-2:] == ["reuse-deep", "alloc-flat"]
    deep = resolve_strategy("reuse-deep", config)
    assert isinstance(deep, ReuseStrategy) and deep.variant == "reuse-deep"
    assert deep.params.as_dict()["pool_depth"] == 4096 and deep.params.as_dict()["mdl_reuse"] is True
    assert resolve_strategy("reuse", config).params.as_dict()["pool_depth"] == 256
    assert resolve_strategy("copy", config).params == get_strategy("copy").Params()
    assert resolve_strategy("reuse").params.as_dict()["pool_depth"] == 0
    assert resolve_miniport("loopback", config).params.as_dict()["backfill"] == 16
    with pytest.raises(ConfigError) as error:
        resolve_strategy("reuse-shallow", config)
    assert "reuse-deep" in error.value.choices


@pytest.mark.parametrize(
    ("text", "what", "value", "choices"),
    [
        pytest.param(
            "[strategy.reuse-deep]\nbase = 'reuse'\npool_dept = 1\n",
            "cfg.toml [strategy.reuse-deep] pool_dept",
            "pool_dept",
            ("pool_depth", "header", "mdl_reuse", "clear_oob", "reset_status"),
            id="unknown-parameter",
        ),
        pytest.param(
            "[strategy.reuse]\npool_depth = 'deep'\n",
            "cfg.toml [strategy.reuse] pool_depth",
            "deep",
            ("pool_depth", "header", "mdl_reuse", "clear_oob", "reset_status"),
            id="wrong-type",
        ),
        pytest.param(
            "[strategy.reuse]\npool_depth = -5\n",
            "cfg.toml [strategy.reuse] pool_depth",
            -5,
            ("pool_depth", "header", "mdl_reuse", "clear_oob", "reset_status"),
            id="invalid-value",
        ),
        pytest.param(
            "[strategy.reuse]\nheader = 'front'\n",
            "cfg.toml [strategy.reuse] header",
            "front",
            ("whole", "split", "retreat"),
            id="invalid-choice",
        ),
        pytest.param(
            "[strategy.fast]\nbase = 'resue'\n",
            "cfg.toml [strategy.fast] base",
            "resue",
            None,
            id="unknown-base",
        ),
        pytest.param("[strategy.fast]\npool_depth = 1\n", "cfg.toml [strategy.fast]", "fast", None, id="no-base"),
        pytest.param(
            "[strategy.reuse]\nbase = 'alloc'\n", "cfg.toml [strategy.reuse] base", "alloc", (), id="builtin-rebased"
        ),
        pytest.param(
            "[strategies.reuse]\n",
            "cfg.toml [strategies]",
            "strategies",
            ("strategy.NAME", "miniport.NAME"),
            id="unknown-section",
        ),
        pytest.param(
            "[miniport.tap0]\n", "cfg.toml [miniport.tap0]", "tap0", ("loopback", "tap"), id="unknown-miniport"
        ),
        pytest.param(
            "[miniport.loopback]\nmtu = 10\n",
            "cfg.toml [miniport.loopback] mtu",
            10,
            ("backfill", "mtu", "from_current_mdl"),
            id="bad-miniport-value",
        ),
        pytest.param("[strategy.reuse\n", "config", None, (), id="not-toml"),
    ],
)
def test_config_errors(tmp_path: Path, text: str, what: str, value: object, choices: tuple[str, ...] | None) -> None:
    """Each error names the file, section and key; ``choices`` are the valid keys (or names) when there are some;
    None: the valid names are every registered strategy."""
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.what.replace(str(tmp_path) + "/", "") == what
    assert error.value.exit_code == ExitCode.USAGE
    if what == "config":  # not TOML at all: the file is the thing named
        assert str(path) == error.value.value
        return
    assert error.value.value == value
    if choices is None:
        assert set(available()) <= set(error.value.choices)
    else:
        assert error.value.choices == choices


def test_config_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "missing.toml")
    assert error.value.what == "config" and "missing.toml" in str(error.value.value)


def test_parse_config_from_a_document() -> None:
    config = parse_config({"strategy": {"copy": {"backfill": 32}}})
    assert resolve_strategy("copy", config).params.as_dict()["backfill"] == 32
