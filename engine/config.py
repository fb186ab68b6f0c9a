"""The TOML configuration of strategies (and miniports): parameters of built-ins and named variants.

```toml
[strategy.reuse]            # parameters of a registered strategy
pool_depth = 256

[strategy.reuse-deep]       # a named variant: a registered strategy with its own parameters
base = "reuse"
pool_depth = 4096
mdl_reuse = true

[miniport.loopback]         # parameters of a registered miniport
backfill = 16
```

Every problem is a :class:`~ndis_replay.errors.ConfigError` whose ``what`` names the file, the section and the
key (``"cfg.toml [strategy.reuse-deep] pool_depth"``) and whose ``choices`` are the valid keys or names; the
message is formed by the CLI.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndis_replay.engine.miniports import MINIPORTS
from ndis_replay.engine.miniports.base import Miniport, MiniportParams
from ndis_replay.engine.strategies import STRATEGIES
from ndis_replay.engine.strategies.base import Strategy, StrategyParams
from ndis_replay.errors import ConfigError

#: the tables a configuration may hold
SECTIONS = ("strategy", "miniport")


@dataclass(frozen=True)
class StrategySection:
    """One ``[strategy.NAME]`` table: ``base`` is the registered strategy it configures (NAME itself for a
    built-in's own section), ``params`` the parameter values as written."""

    name: str
    base: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Config:
    """A parsed, validated configuration; ``source`` names the file (or "<config>")."""

    source: str = "<config>"
    strategies: Mapping[str, StrategySection] = field(default_factory=dict)
    miniports: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def strategy_names(self) -> list[str]:
        """Registered strategies, then the variants this configuration defines."""
        names = STRATEGIES.available()
        return names + [name for name in self.strategies if name not in names]

    def variants(self) -> dict[str, str]:
        """Variant name → base strategy name (sections that define a new name)."""
        registered = set(STRATEGIES.available())
        return {name: s.base for name, s in self.strategies.items() if name not in registered}


def _where(source: str, section: str, key: str | None = None) -> str:
    return f"{source} [{section}]" + (f" {key}" if key else "")


def _params(
    params_type: type[StrategyParams] | type[MiniportParams], values: Mapping[str, Any], source: str, section: str
) -> StrategyParams | MiniportParams:
    """The parameter dataclass from ``values``: unknown keys, wrong types and invalid values are ConfigErrors that
    name the file, section and key, with the valid keys as choices."""
    fields = {f.name: f for f in dataclasses.fields(params_type)}
    valid = tuple(fields)
    for key in values:
        if key not in fields:
            raise ConfigError(_where(source, section, key), key, "unknown parameter", valid)
    for key, value in values.items():
        kind = str(fields[key].type)
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(_where(source, section, key), value, "must be an integer", valid)
        if kind == "bool" and not isinstance(value, bool):
            raise ConfigError(_where(source, section, key), value, "must be true or false", valid)
        if kind == "str" and not isinstance(value, str):
            raise ConfigError(_where(source, section, key), value, "must be a string", valid)
    try:
        made = params_type(**values)
        made.validate()
    except ConfigError as error:
        bad_key = error.what if error.what in fields else None
        raise ConfigError(
            _where(source, section, bad_key), error.value, error.reason, error.choices or valid
        ) from error
    except TypeError as error:  # a value the dataclass itself refuses
        raise ConfigError(_where(source, section), dict(values), str(error), valid) from error
    return made


def parse_config(document: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate a decoded TOML document (see the module docstring)."""
    for key in document:
        if key not in SECTIONS:
            raise ConfigError(_where(source, key), key, "unknown section", tuple(f"{s}.NAME" for s in SECTIONS))
    registered = STRATEGIES.available()
    strategies: dict[str, StrategySection] = {}
    tables = document.get("strategy", {})
    if not isinstance(tables, dict):
        raise ConfigError(_where(source, "strategy"), tables, "must be tables [strategy.NAME]")
    for name, table in tables.items():
        section = f"strategy.{name}"
        if not isinstance(table, dict):
            raise ConfigError(_where(source, section), table, "must be a table of parameters")
        values = dict(table)
        base = values.pop("base", None)
        if base is None:
            if name not in registered:
                raise ConfigError(
                    _where(source, section), name, "unknown strategy (a variant needs base = ...)", registered
                )
            base = name
        elif not isinstance(base, str) or base not in registered:
            raise ConfigError(_where(source, section, "base"), base, "unknown base strategy", registered)
        elif name in registered and base != name:
            raise ConfigError(
                _where(source, section, "base"), base, f"{name!r} is a registered strategy: it cannot be a variant"
            )
        cls = STRATEGIES.get(base)
        _params(cls.Params, values, source, section)
        strategies[name] = StrategySection(name, base, values)
    miniports: dict[str, dict[str, Any]] = {}
    tables = document.get("miniport", {})
    if not isinstance(tables, dict):
        raise ConfigError(_where(source, "miniport"), tables, "must be tables [miniport.NAME]")
    for name, table in tables.items():
        section = f"miniport.{name}"
        if name not in MINIPORTS:
            raise ConfigError(_where(source, section), name, "unknown miniport", MINIPORTS.available())
        if not isinstance(table, dict):
            raise ConfigError(_where(source, section), table, "must be a table of parameters")
        _params(MINIPORTS.get(name).Params, table, source, section)
        miniports[name] = dict(table)
    return Config(source, strategies, miniports)


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML configuration file."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError("config", str(path), f"cannot be read: {error.strerror or error}") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError("config", str(path), f"is not valid TOML: {error}") from error
    return parse_config(document, str(path))


def resolve_strategy(name: str, config: Config | None = None) -> Strategy:
    """A strategy instance for ``name``: a variant of ``config``, or a registered strategy with the parameters of
    its ``[strategy.NAME]`` section (defaults without one). Unknown → ConfigError with every valid name. The
    instance's ``variant`` attribute holds ``name`` (a variant's label in results)."""
    config = config or Config()
    section = config.strategies.get(name)
    if section is None:
        if name not in STRATEGIES:
            raise ConfigError("strategy", name, "unknown strategy", config.strategy_names())
        cls = STRATEGIES.get(name)
        strategy = cls()
    else:
        cls = STRATEGIES.get(section.base)
        params = _params(cls.Params, section.params, config.source, f"strategy.{name}")
        strategy = cls(params)  # type: ignore[arg-type]
    strategy.variant = name
    return strategy


def resolve_miniport(name: str, config: Config | None = None) -> Miniport:
    """A miniport instance for ``name`` with the parameters of its ``[miniport.NAME]`` section."""
    config = config or Config()
    cls = MINIPORTS.get(name)
    values = config.miniports.get(name)
    if values is None:
        return cls()
    return cls(_params(cls.Params, values, config.source, f"miniport.{name}"))  # type: ignore[arg-type]


__all__ = [
    "SECTIONS",
    "Config",
    "StrategySection",
    "load_config",
    "parse_config",
    "resolve_miniport",
    "resolve_strategy",
]
