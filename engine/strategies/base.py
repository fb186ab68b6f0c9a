"""The strategy ABC: how a buffer-management strategy plugs into the replay loop (contract: /tmp/spec/contract.md).

A strategy is the protocol driver (or, for ``clone``, a filter module plus the protocol above it) of the modelled
stack. The replay loop drives it call by call::

    strategy.bind(ctx)                  # pools, handler registration (ctx.ndis.register_protocol / register_filter)
    for call in calls:
        built = strategy.build(call)    # the descriptors of one send call (timed as "build")
        strategy.submit(built)          # NdisSendNetBufferLists / NdisSendPackets (timed as "send")
    strategy.unbind()                   # free everything; nothing may stay outstanding

Completions reach the strategy through the handler it registered at bind (ProtocolSendNetBufferListsComplete /
ProtocolSendComplete), called by NDIS when the miniport completes: the strategy frees or recycles there.

Parameters are a frozen dataclass per strategy (``Params``), subclassing :class:`StrategyParams`; every field has
a default and ``metadata={"help": ...}``; :meth:`StrategyParams.validate` raises
:class:`~ndis_replay.errors.ConfigError` with the facts (field, value, reason).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ndis_replay.errors import ConfigError

if TYPE_CHECKING:
    from ndis_replay.engine.miniports.base import MiniportInfo
    from ndis_replay.engine.ndis import Ndis


@dataclass(frozen=True, slots=True)
class SendCall:
    """One send call: the packets of one batch, in wire order (one NBL chain / one NdisSendPackets array)."""

    #: the batch number (0, 1, 2, ... in replay order)
    call: int
    #: the trace ``index`` of each packet (findings name these)
    indices: tuple[int, ...]
    #: each packet's captured bytes (read-only views over the trace data)
    frames: tuple[memoryview, ...]
    #: each packet's header_len (header/payload split strategies use it)
    header_lens: tuple[int, ...]


@dataclass(frozen=True)
class BindContext:
    """What a strategy learns at bind: the runtime, the miniport's declaration and the trace's extremes."""

    #: the runtime of this run (checked or not)
    ndis: Ndis
    #: what the miniport declared at open()
    miniport: MiniportInfo
    #: largest frame (cap_len) in the trace, bytes
    max_frame: int
    #: most packets in one send call
    max_call: int
    #: most packets the miniport may hold uncompleted (sizes reuse pools)
    max_in_flight: int


@dataclass(frozen=True)
class StrategyParams:
    """Base of every strategy's ``Params``: a frozen dataclass whose fields carry ``metadata["help"]``.

    Subclasses override :meth:`validate` (calling ``super().validate()``) to check ranges; the base checks the
    declared types of int/bool/str fields, so a TOML value of the wrong type is refused with the field's name.
    """

    def validate(self) -> None:
        """Raise :class:`~ndis_replay.errors.ConfigError` (what = the field name) on an invalid value."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
            if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(field.name, value, "not an integer")
            if kind == "bool" and not isinstance(value, bool):
                raise ConfigError(field.name, value, "not true or false")
            if kind == "str" and not isinstance(value, str):
                raise ConfigError(field.name, value, "not a string")

    @classmethod
    def field_docs(cls) -> dict[str, tuple[object, str]]:
        """``{name: (default, help)}`` of every parameter, in declaration order (for ``ndis-replay strategies``)."""
        out: dict[str, tuple[object, str]] = {}
        for field in dataclasses.fields(cls):
            default: object = field.default
            if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
            out[field.name] = (default, str(field.metadata.get("help", "")))
        return out

    def as_dict(self) -> dict[str, Any]:
        """The parameter values (for run.json)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def require(condition: bool, name: str, value: object, reason: str) -> None:
    """``validate`` helper: raise ``ConfigError(name, value, reason)`` unless ``condition``."""
    if not condition:
        raise ConfigError(name, value, reason)


class Strategy(ABC):
    """A buffer-management strategy: the driver code whose per-packet cost and correctness ndis-replay measures.

    Class attributes: ``name`` (registry key, e.g. ``"reuse"``), ``ndis_version`` (5 or 6), ``summary`` (one line
    for ``ndis-replay strategies``), ``Params`` (the frozen parameter dataclass). The instance holds ``params``
    (validated) and, after :meth:`bind`, ``ctx``.
    """

    name: ClassVar[str]
    ndis_version: ClassVar[int]
    summary: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, params: StrategyParams | None = None) -> None:
        if params is None:
            params = self.Params()
        elif not isinstance(params, self.Params):
            raise ConfigError("params", type(params).__name__, f"not {self.Params.__name__}")
        params.validate()
        self.params = params
        #: the name results label this instance with: ``name``, or a configured variant's (engine.config)
        self.variant: str = getattr(type(self), "name", type(self).__name__)

    @abstractmethod
    def bind(self, ctx: BindContext) -> None:
        """Allocate pools and register with ``ctx.ndis`` (the completion handler)."""

    @abstractmethod
    def build(self, call: SendCall) -> object:
        """The descriptors of one send call (an NBL chain, or a list of NDIS_PACKETs); timed as "build"."""

    @abstractmethod
    def submit(self, built: object) -> None:
        """Pass ``built`` down: NdisSendNetBufferLists / NdisSendPackets; timed as "send"."""

    @abstractmethod
    def unbind(self) -> None:
        """Free everything; nothing may stay outstanding (the loop drains the miniport first)."""

    def stats(self) -> dict[str, int]:
        """Strategy-level counts the NDIS counters do not hold (cache hits, pool fallbacks, …), for run.json."""
        return {}

    @classmethod
    def describe(cls) -> str:
        """The class docstring (what driver code it models and which NDIS calls it makes)."""
        return (cls.__doc__ or "").strip()


__all__ = ["BindContext", "SendCall", "Strategy", "StrategyParams", "require"]
