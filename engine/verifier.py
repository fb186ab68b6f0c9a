"""The verifier: owner states on every descriptor and the rules of NDIS_MODEL.md §4, as :class:`Finding` objects.

How it works
------------

* **Owner states.** Every descriptor the checked runtime hands out records its *originator* (the driver that
  allocated it) and its *holder* (the driver that owns it now). Sending moves an NBL to the next driver down and
  appends the sender to its *path*; each completion pops the path, so the NBL comes back one layer at a time
  (driver → stack → completed/driver, :class:`OwnerState`). Freed descriptors are *quarantined*: never handed out
  again, their holder becomes :data:`FREED`.
* **Access detection.** In checked mode the pools create the ``Checked…`` subclasses below, whose
  ``__getattribute__``/``__setattr__`` compare the acting driver (:attr:`Verifier.actor`, switched by NDIS when it
  calls a registered handler, or by :meth:`~ndis_replay.engine.ndis.runtime.Ndis.acting_as`) with the holder.
  Accesses made by the model's own code (NDIS walking a chain, the verifier) are recognised by the calling
  module and never flagged. The unchecked runtime creates the plain classes of
  :mod:`ndis_replay.engine.ndis.structs`: no guard, no cost.
* **Call checks.** Every DDK call in checked mode first asks the verifier (``check_*``/``on_*`` hooks) to validate
  its arguments against the rules; send and completion validate whole chains.
* **Findings, not crashes.** A violation is recorded as a :class:`Finding` (rule, packet index, descriptor,
  message, severity) and the model carries on where it can. Where the real system would bug-check and the model
  cannot continue — a chain whose Next pointers loop, an NBL sent while already in flight, a freed descriptor in a
  chain being sent, a completion that cannot be routed — the verifier records the Finding and raises
  :class:`NdisBugCheck`, which the replay loop catches and reports as that strategy's failure.

A finding's packet index is the send call during which the violation happened (the replay loop sets
:attr:`Verifier.packet_index` per send call); for what is only visible when an NBL completes (STATUS-SET,
RESTORE-ON-COMPLETE) it is the packet the NBL was sent for. Findings are deduplicated per (rule, descriptor,
packet index); at most ``max_findings_per_rule`` are kept per rule, all are counted in :attr:`Verifier.counts`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex, TypeVar, cast

from ndis_replay.engine.ndis.constants import (
    MDL_PAGES_LOCKED,
    MEMORY_ALLOCATION_ALIGNMENT,
    POINTER_SIZE,
    SEND_COMPLETION_STATUSES,
)
from ndis_replay.engine.ndis.structs import (
    MDL_KIND_BUFFER,
    MDL_KIND_DERIVED,
    MDL_KIND_EMBEDDED,
    MDL_KIND_IO,
    MDL_KIND_NAMES,
    MDL_KIND_NDIS,
    MDL_KIND_PREALLOCATED,
    MDL_KIND_RETREAT,
    NBL_KIND_CLONE,
    NBL_KIND_NAMES,
    NBL_KIND_POOL,
    Mdl,
    NblContext,
    NdisPacket,
    NdisPacketOobData,
    NetBuffer,
    NetBufferList,
    locate_offset,
)
from ndis_replay.errors import ExitCode, ReplayError

if TYPE_CHECKING:
    from ndis_replay.engine.ndis.runtime import Handle, Ndis

# --- rules --------------------------------------------------------------------------------------------------------

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    """One row of NDIS_MODEL.md §4. ``enforced`` is False for rules outside the modelled send path."""

    name: str
    severity: str
    enforced: bool
    what: str


def _rules(*rows: tuple[str, str, bool, str]) -> dict[str, Rule]:
    return {name: Rule(name, severity, enforced, what) for name, severity, enforced, what in rows}


#: The rule table, names exactly as NDIS_MODEL.md §4. Only errors fail a run.
RULES: dict[str, Rule] = _rules(
    ("OWN-AFTER-SEND", ERROR, True, "NBL/NB/MDL/NetBufferListInfo touched between send and its completion"),
    ("STATUS-BEFORE-COMPLETE", ERROR, True, "Status read before the send completed"),
    ("MINIPORT-AFTER-COMPLETE", ERROR, True, "a lower driver touched an NBL after completing it"),
    ("STATUS-SET", ERROR, True, "completion without a valid Status written by the miniport"),
    ("SOURCEHANDLE-SET", ERROR, True, "originated NBL sent with SourceHandle other than the sender's handle"),
    ("SOURCEHANDLE-FOREIGN", ERROR, True, "filter changed the SourceHandle of an NBL it did not originate"),
    ("OWN-NBL-NOT-COMPLETED-UP", ERROR, True, "filter completed its own NBL upward"),
    ("NB-LIST-IMMUTABLE", ERROR, True, "NB list changed by a driver that did not create it"),
    ("LIST-LINKAGE", ERROR, True, "chain not NULL-terminated, NBL in two lists, empty chain, Next not reset"),
    ("RESTORE-ON-COMPLETE", ERROR, True, "filter completed a foreign NBL without undoing its modifications"),
    ("POOL-ORIGIN", ERROR, True, "descriptor not from an NDIS pool (copied struct), wrong pool type or pool"),
    ("FREE-KIND", ERROR, True, "wrong free routine or flags, or freeing a descriptor the driver does not own"),
    ("POOL-FREE-OUTSTANDING", ERROR, True, "pool freed (or unbind) with descriptors outstanding"),
    ("NB-BEFORE-NBL", ERROR, True, "NdisAllocateNetBuffer NB not freed before its NBL; preallocated part freed"),
    ("CTX-LIFO", ERROR, True, "context not freed LIFO before the NBL; preallocated context freed; bad size"),
    ("PARENT-FREED-WITH-CHILDREN", ERROR, True, "parent freed or completed with ChildRefCount > 0"),
    ("PARENT-PASSED-DOWN", ERROR, True, "parent NBL sent down after deriving children"),
    ("PARENT-PTR-OVERWRITE", ERROR, True, "ParentNetBufferList of an NBL received from another driver overwritten"),
    ("CHILDCOUNT-NOT-OWNER", ERROR, True, "ChildRefCount updated by a driver that does not own the parent"),
    ("REUSE-CONSISTENCY", ERROR, True, "DataOffset+DataLength beyond the MDL chain; CurrentMdl/Offset inconsistent"),
    ("REUSE-WHILE-OWNED-ONLY", ERROR, False, "re-initialising an NB not owned (reported as OWN-AFTER-SEND)"),
    ("RETREAT-ALLOC", WARNING, True, "retreat beyond the backfill: NDIS allocated an MDL and buffer"),
    ("RETREAT-LEAK", ERROR, True, "NB freed or re-pointed with a retreat-allocated MDL still chained"),
    ("ADVANCE-UNDERFLOW", ERROR, True, "advance by more than DataLength"),
    ("RX-ADVANCE-FREEMDL", ERROR, False, "receive path: not modelled"),
    ("RX-RESOURCES", ERROR, False, "receive path: not modelled"),
    ("RX-RETURN-BINDING", ERROR, False, "receive path: not modelled"),
    ("NDIS5-REINIT-LEAK", ERROR, True, "NdisReinitializePacket with buffers still chained"),
    ("NDIS5-REINIT-FOREIGN", ERROR, True, "NdisReinitializePacket on a packet the driver did not allocate"),
    ("NDIS5-OOB-STALE", ERROR, True, "reused packet sent with the previous send's OOB data"),
    ("NDIS5-PENDING", ERROR, True, "packet touched or reused before its ProtocolSendComplete"),
    ("NDIS5-MINIPORT-COMPLETE", ERROR, True, "miniport completed a packet it does not hold, or touched it after"),
    ("NDIS5-RECV-REUSE", ERROR, False, "receive path: not modelled"),
    ("MDL-LOCK-BALANCE", ERROR, True, "lock/unlock imbalance, freed while locked, NdisAllocateMdl on pageable memory"),
    ("UAF-QUARANTINE", ERROR, True, "freed descriptor accessed or freed again (pool-verify quarantine)"),
    ("TIMED-SEND", ERROR, False, "NBL pending too long: a timing rule for the replay loop"),
    ("SDV-ALLOC-FREE", ERROR, True, "descriptors still allocated at the end of the run"),
)


@dataclass(frozen=True)
class Finding:
    """One rule violation: ``rule`` (a :data:`RULES` name), ``packet_index`` (the send call's first packet, -1
    outside any), ``descriptor`` (a short stable name such as "NBL#12 (pool send)"), ``message``, ``severity``
    ("error" fails a run, "warning" does not)."""

    rule: str
    packet_index: int
    descriptor: str
    message: str
    severity: str = ERROR

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for run.json)."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.rule} at packet {self.packet_index}: {self.descriptor}: {self.message}"


class NdisBugCheck(ReplayError):
    """The modelled system cannot continue (where Windows would bug-check). ``finding`` says why.

    Raised, after the Finding is recorded, for: a cyclic NBL/NB/MDL/buffer chain (LIST-LINKAGE), an NBL, NB or
    packet sent while already in flight (LIST-LINKAGE, NDIS5-PENDING), a freed descriptor in a chain being sent
    (UAF-QUARANTINE), an NBL or packet that was never allocated from an NDIS pool being sent (POOL-ORIGIN), and —
    unchecked mode only — a completion whose SourceHandle names no bound driver (SOURCEHANDLE-SET).
    The replay loop catches it and reports the strategy as failed; nothing else in the harness is affected.
    """

    exit_code = ExitCode.FINDINGS

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding)
        self.finding = finding

    def __str__(self) -> str:
        return f"bug check: {self.finding}"


class OwnerState(IntEnum):
    """Where a descriptor is, from its originator's point of view."""

    #: held by the driver that allocated it, never sent or reset since
    DRIVER = 0
    #: sent: held by a lower driver (or by NDIS in between)
    STACK = 1
    #: back with its originator after a completion; Status is valid
    COMPLETED = 2
    #: freed and quarantined
    FREED = 3


class _Freed:
    """The holder of a freed descriptor (never an actor)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<freed>"


#: The holder of freed (quarantined) descriptors.
FREED: Any = _Freed()

#: Modules whose attribute accesses are the model's own (never flagged).
_INTERNAL = frozenset(
    {
        "ndis_replay.engine.verifier",
        "ndis_replay.engine.ndis.structs",
        "ndis_replay.engine.ndis.pools",
        "ndis_replay.engine.ndis.mdl",
        "ndis_replay.engine.ndis.nbl",
        "ndis_replay.engine.ndis.ndis5",
        "ndis_replay.engine.ndis.send",
        "ndis_replay.engine.ndis.runtime",
        "copy",
    }
)
_getframe = sys._getframe
_oga = object.__getattribute__
_osa = object.__setattr__


def _driver_code() -> bool:
    """True when the access being guarded comes from driver (strategy, miniport, test) code."""
    return _getframe(2).f_globals.get("__name__") not in _INTERNAL


# --- checked descriptor classes -------------------------------------------------------------------------------------


class CheckedSlots(list[Any]):
    """A PVOID array of a checked descriptor (NetBufferListInfo, Protocol/MiniportReserved): element access is
    checked against its owner's state like a field access."""

    __slots__ = ("_v_name", "_v_owner")

    def __init__(self, owner: Any, name: str, items: Iterable[Any]) -> None:
        super().__init__(items)
        self._v_owner = owner
        self._v_name = name

    def _check(self, write: bool) -> None:
        owner = self._v_owner
        verifier: Verifier = _oga(owner, "_v")
        if verifier.actor is not _oga(owner, "_v_holder") and _getframe(2).f_globals.get("__name__") not in _INTERNAL:
            verifier.on_access(owner, self._v_name, write)

    def __getitem__(self, index: Any) -> Any:
        self._check(False)
        return super().__getitem__(index)

    def __setitem__(self, index: Any, value: Any) -> None:
        self._check(True)
        super().__setitem__(index, value)

    def __iter__(self) -> Iterator[Any]:
        self._check(False)
        return super().__iter__()

    def __copy__(self) -> list[Any]:
        return list(self)

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        return (list, (list(self),))


class _Owned:
    """What the owned descriptors (NBL, NB, NDIS_PACKET) share in checked mode: a driver's read of a field while
    another driver holds the descriptor is reported (OWN-AFTER-SEND and kin), and a struct copy is a forgery
    (POOL-ORIGIN). Writes differ per descriptor, so each class keeps its own ``__setattr__``."""

    __slots__ = ()

    def __getattribute__(self, name: str) -> Any:
        if name[0] != "_":
            verifier = _oga(self, "_v")
            if verifier.actor is not _oga(self, "_v_holder") and _driver_code():
                verifier.on_access(self, name, False)
        return _oga(self, name)

    def __copy__(self) -> Any:
        verifier: Verifier = _oga(self, "_v")
        return verifier.forge(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        verifier: Verifier = _oga(self, "_v")
        return verifier.forge(self)


class CheckedNetBufferList(_Owned, NetBufferList):
    """NET_BUFFER_LIST with owner state and guarded fields (checked mode)."""

    __slots__ = (
        "_v_completed_by",
        "_v_forged",
        "_v_holder",
        "_v_mdls",
        "_v_next_link",
        "_v_next_written",
        "_v_origin",
        "_v_path",
        "_v_received",
        "_v_sent_at",
        "_v_state",
        "_v_status_written",
    )
    _v: Verifier

    def __init__(self, serial: int, pool: Any, kind: int) -> None:
        verifier = self._v
        _osa(self, "_v_holder", verifier.actor)
        _osa(self, "_v_origin", verifier.actor)
        _osa(self, "_v_state", OwnerState.DRIVER)
        _osa(self, "_v_path", [])
        _osa(self, "_v_completed_by", None)
        _osa(self, "_v_mdls", [])
        _osa(self, "_v_next_link", None)
        _osa(self, "_v_next_written", True)
        _osa(self, "_v_status_written", False)
        _osa(self, "_v_sent_at", -1)
        _osa(self, "_v_received", None)
        _osa(self, "_v_forged", None)
        super().__init__(serial, pool, kind)
        _osa(self, "net_buffer_list_info", CheckedSlots(self, "net_buffer_list_info", self.net_buffer_list_info))
        _osa(self, "protocol_reserved", CheckedSlots(self, "protocol_reserved", self.protocol_reserved))
        _osa(self, "miniport_reserved", CheckedSlots(self, "miniport_reserved", self.miniport_reserved))

    def __setattr__(self, name: str, value: Any) -> None:
        if name[0] != "_":
            verifier = _oga(self, "_v")
            if (verifier.actor is not _oga(self, "_v_holder") or name in _NBL_WRITE_HOOKS) and _driver_code():
                verifier.on_nbl_write(self, name, value)
        _osa(self, name, value)


class CheckedNetBuffer(_Owned, NetBuffer):
    """NET_BUFFER with owner state and guarded fields (checked mode)."""

    __slots__ = ("_v_forged", "_v_holder", "_v_nbl", "_v_origin")
    _v: Verifier

    def __init__(self, serial: int, pool: Any, owner: NetBufferList | None) -> None:
        verifier = self._v
        _osa(self, "_v_holder", verifier.actor)
        _osa(self, "_v_origin", verifier.actor)
        _osa(self, "_v_nbl", owner)
        _osa(self, "_v_forged", None)
        super().__init__(serial, pool, owner)
        _osa(self, "protocol_reserved", CheckedSlots(self, "protocol_reserved", self.protocol_reserved))
        _osa(self, "miniport_reserved", CheckedSlots(self, "miniport_reserved", self.miniport_reserved))

    def __setattr__(self, name: str, value: Any) -> None:
        if name[0] != "_":
            verifier = _oga(self, "_v")
            if (verifier.actor is not _oga(self, "_v_holder") or name in _NB_WRITE_HOOKS) and _driver_code():
                verifier.on_nb_write(self, name, value)
        _osa(self, name, value)


class CheckedMdl(Mdl):
    """MDL whose accesses are checked against the NBLs in flight that reference it (checked mode)."""

    __slots__ = ("_v_holder", "_v_origin", "_v_refs", "_v_retreat_nb")
    _v: Verifier

    def __init__(self, serial: int, kind: int, data: memoryview, byte_offset: int, block: int) -> None:
        verifier = self._v
        _osa(self, "_v_holder", verifier.actor)
        _osa(self, "_v_origin", verifier.actor)
        _osa(self, "_v_refs", [])
        # the NB a retreat allocated this MDL for: a clone sharing the chain (USE_ORIGINAL_MDLS) does not own it
        _osa(self, "_v_retreat_nb", None)
        super().__init__(serial, kind, data, byte_offset, block)

    def __getattribute__(self, name: str) -> Any:
        if name[0] != "_":
            refs = _oga(self, "_v_refs")
            if (refs or _oga(self, "_v_holder") is FREED) and _driver_code():
                _oga(self, "_v").on_mdl_access(self, name, False)
        return _oga(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name[0] != "_":
            refs = _oga(self, "_v_refs")
            if (refs or _oga(self, "_v_holder") is FREED) and _driver_code():
                _oga(self, "_v").on_mdl_access(self, name, True)
        _osa(self, name, value)


class CheckedNblContext(NblContext):
    """NET_BUFFER_LIST_CONTEXT guarded by the state of the NBL it belongs to (checked mode)."""

    __slots__ = ("_v_nbl",)
    _v: Verifier

    def __init__(self, size: int, block: int, preallocated: bool) -> None:
        _osa(self, "_v_nbl", None)
        super().__init__(size, block, preallocated)

    def __getattribute__(self, name: str) -> Any:
        if name[0] != "_":
            nbl = _oga(self, "_v_nbl")
            if nbl is not None:
                verifier = _oga(self, "_v")
                if verifier.actor is not _oga(nbl, "_v_holder") and _driver_code():
                    verifier.on_access(nbl, "context." + name, False)
        return _oga(self, name)


class CheckedNdisPacket(_Owned, NdisPacket):
    """NDIS_PACKET with owner state and guarded fields (checked mode)."""

    __slots__ = (
        "_v_completed_by",
        "_v_completions",
        "_v_forged",
        "_v_holder",
        "_v_oob_written",
        "_v_origin",
        "_v_path",
        "_v_state",
    )
    _v: Verifier

    def __init__(self, serial: int, pool: Any, protocol_reserved_length: int, oob: NdisPacketOobData) -> None:
        verifier = self._v
        _osa(self, "_v_holder", verifier.actor)
        _osa(self, "_v_origin", verifier.actor)
        _osa(self, "_v_state", OwnerState.DRIVER)
        _osa(self, "_v_path", [])
        _osa(self, "_v_completed_by", None)
        _osa(self, "_v_completions", 0)
        _osa(self, "_v_oob_written", False)
        _osa(self, "_v_forged", None)
        super().__init__(serial, pool, protocol_reserved_length, oob)
        _osa(oob, "_packet", self)
        _osa(self, "packet_info", CheckedSlots(self, "packet_info", self.packet_info))
        _osa(self, "miniport_reserved", CheckedSlots(self, "miniport_reserved", self.miniport_reserved))

    def __setattr__(self, name: str, value: Any) -> None:
        if name[0] != "_":
            verifier = _oga(self, "_v")
            if verifier.actor is not _oga(self, "_v_holder") and _driver_code():
                verifier.on_access(self, name, True)
        _osa(self, name, value)


class CheckedNdisPacketOobData(NdisPacketOobData):
    """NDIS_PACKET_OOB_DATA guarded by its packet's state; writes mark the OOB as reset (NDIS5-OOB-STALE)."""

    __slots__ = ()
    _v: Verifier

    def __getattribute__(self, name: str) -> Any:
        if name[0] != "_":
            packet = _oga(self, "_packet")
            if packet is not None:
                verifier = _oga(self, "_v")
                if verifier.actor is not _oga(packet, "_v_holder") and _driver_code():
                    verifier.on_access(packet, "oob." + name, False)
        return _oga(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name[0] != "_":
            packet = _oga(self, "_packet")
            if packet is not None:
                # any write resets "stale": NDIS's own writes (allocation, the OOB macros) mark it anyway
                _osa(packet, "_v_oob_written", True)
                verifier = _oga(self, "_v")
                if verifier.actor is not _oga(packet, "_v_holder") and _driver_code():
                    verifier.on_access(packet, "oob." + name, True)
        _osa(self, name, value)


_NBL_FIELDS_NDIS_PRIVATE = frozenset({"ndis_pool_handle", "context"})
#: fields whose writes by the owning driver still need a look (the rest only need the ownership check)
_NBL_WRITE_HOOKS = _NBL_FIELDS_NDIS_PRIVATE | {"next", "status", "parent_net_buffer_list", "first_net_buffer"}
_NB_WRITE_HOOKS = frozenset({"next", "mdl_chain", "ndis_pool_handle"})
_D = TypeVar("_D")


# --- the verifier ----------------------------------------------------------------------------------------------------


class Verifier:
    """Checked-mode state of one :class:`~ndis_replay.engine.ndis.runtime.Ndis`: the acting driver, the current
    packet index (set by the replay loop per send call), the findings, and the rule checks the DDK calls run."""

    def __init__(self, ndis: Ndis, *, max_findings_per_rule: int = 100) -> None:
        self.ndis = ndis
        #: the driver whose code is running (NDIS switches it around handler calls)
        self.actor: Handle = ndis.binding_handle
        self._packet_index = -1
        self.findings: list[Finding] = []
        #: findings per rule, including those not kept
        self.counts: dict[str, int] = {}
        self.max_findings_per_rule = max_findings_per_rule
        self._seen: set[tuple[str, str, int]] = set()
        #: NBLs sent and not yet back with their originator, by id
        self.in_flight: dict[int, NetBufferList] = {}
        #: NDIS 5 packets sent and not yet completed, by id
        self.packets_in_flight: dict[int, NdisPacket] = {}
        #: MDLs locked and not unlocked, by id
        self.locked_mdls: dict[int, Mdl] = {}
        self._freed_memory: dict[int, object] = {}
        # per-runtime subclasses carry the verifier as a class attribute (no per-object slot, set before __init__)
        self.nbl_class = cast(type[CheckedNetBufferList], self._bind(CheckedNetBufferList))
        self.nb_class = cast(type[CheckedNetBuffer], self._bind(CheckedNetBuffer))
        self.mdl_class = cast(type[CheckedMdl], self._bind(CheckedMdl))
        self.ctx_class = cast(type[CheckedNblContext], self._bind(CheckedNblContext))
        self.packet_class = cast(type[CheckedNdisPacket], self._bind(CheckedNdisPacket))
        self.oob_class = cast(type[CheckedNdisPacketOobData], self._bind(CheckedNdisPacketOobData))

    def _bind(self, base: type) -> type:
        """A subclass of ``base`` carrying this verifier as a class attribute (no per-object slot, and set before
        ``__init__`` runs, so the guards work from the first field write)."""
        return type(base.__name__, (base,), {"__slots__": (), "_v": self, "__module__": __name__})

    @property
    def packet_index(self) -> int:
        """Index of the first packet of the send call being replayed (-1: none yet); the replay loop sets it."""
        return self._packet_index

    @packet_index.setter
    def packet_index(self, index: int) -> None:
        if index != self._packet_index:
            self._packet_index = index
            self._seen.clear()  # deduplication is per packet: older keys can never match again

    # --- results -----------------------------------------------------------------------------------------------

    @property
    def errors(self) -> list[Finding]:
        """Kept findings of severity "error"."""
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def ok(self) -> bool:
        """True when no error finding was counted (warnings do not fail a run)."""
        return not any(n for rule, n in self.counts.items() if RULES[rule].severity == ERROR)

    def rules_found(self) -> set[str]:
        """Names of the rules with at least one finding."""
        return set(self.counts)

    def report(self, rule: str, obj: object, message: str, packet_index: int | None = None) -> Finding | None:
        """Record a finding of ``rule`` about ``obj`` (a descriptor, pool or name) at the current packet, or at
        ``packet_index`` when given; None when deduplicated."""
        descriptor = obj if isinstance(obj, str) else self.describe(obj)
        index = self._packet_index if packet_index is None else packet_index
        key = (rule, descriptor, index)
        if key in self._seen:
            return None
        self._seen.add(key)
        self.counts[rule] = self.counts.get(rule, 0) + 1
        finding = Finding(rule, index, descriptor, message, RULES[rule].severity)
        if self.counts[rule] <= self.max_findings_per_rule:
            self.findings.append(finding)
        return finding

    def bug_check(self, rule: str, obj: object, message: str) -> NoReturn:
        """Record a finding and stop the modelled system (:class:`NdisBugCheck`)."""
        descriptor = obj if isinstance(obj, str) else self.describe(obj)
        finding = self.report(rule, obj, message) or Finding(
            rule, self.packet_index, descriptor, message, RULES[rule].severity
        )
        raise NdisBugCheck(finding)

    def describe(self, obj: object) -> str:
        """A short stable name for a descriptor: "NBL#12 (pool send)", "NB#3 (of NBL#12)", "MDL#7 (IoAllocateMdl)"."""
        if isinstance(obj, NetBufferList):
            name = f"NBL#{obj._serial}"
            if isinstance(obj, CheckedNetBufferList) and obj._v_forged:
                return f"{name}' ({obj._v_forged})"
            if obj._kind == NBL_KIND_POOL:
                return f"{name} (pool {getattr(obj._pool, 'name', '?')})"
            return f"{name} ({NBL_KIND_NAMES[obj._kind]})"
        if isinstance(obj, NetBuffer):
            name = f"NB#{obj._serial}"
            if isinstance(obj, CheckedNetBuffer) and obj._v_forged:
                return f"{name}' ({obj._v_forged})"
            if obj._owner is not None:
                return f"{name} (of NBL#{obj._owner._serial})"
            return f"{name} (pool {getattr(obj._pool, 'name', '?')})"
        if isinstance(obj, Mdl):
            return f"MDL#{obj._serial} ({MDL_KIND_NAMES[obj._kind]})"
        if isinstance(obj, NdisPacket):
            name = f"PACKET#{obj._serial}"
            if isinstance(obj, CheckedNdisPacket) and obj._v_forged:
                return f"{name}' ({obj._v_forged})"
            return f"{name} (pool {getattr(obj.pool, 'name', '?')})"
        label = getattr(obj, "name", None)
        if label is not None:
            return f"{type(obj).__name__} {label}"
        return type(obj).__name__

    def state_of(self, obj: NetBufferList | NdisPacket) -> OwnerState:
        """The owner state of a checked NBL or packet."""
        state: OwnerState = _oga(obj, "_v_state")
        return state

    # --- access --------------------------------------------------------------------------------------------------

    def on_access(self, obj: Any, name: str, write: bool) -> None:
        """A driver touched ``obj`` (NBL, NB or packet) while not its holder: classify and report."""
        if isinstance(obj, NetBuffer):
            nbl = _oga(obj, "_v_nbl")
            if _oga(obj, "_v_holder") is FREED or nbl is None:
                self._classify(obj, name, write, _oga(obj, "_v_holder"), [], None, packet=False)
            else:
                self._classify(
                    obj, name, write, _oga(obj, "_v_holder"), _oga(nbl, "_v_path"), _oga(nbl, "_v_completed_by"), False
                )
            return
        packet = isinstance(obj, NdisPacket)
        self._classify(
            obj, name, write, _oga(obj, "_v_holder"), _oga(obj, "_v_path"), _oga(obj, "_v_completed_by"), packet
        )

    def _classify(
        self, obj: Any, name: str, write: bool, holder: Any, path: list[Any], completed_by: Any, packet: bool
    ) -> None:
        actor = self.actor
        verb = "wrote" if write else "read"
        field = name or "an element"
        if holder is FREED:
            self.report("UAF-QUARANTINE", obj, f"{actor.role} {verb} {field} after the descriptor was freed")
        elif actor in path:
            if packet:
                self.report("NDIS5-PENDING", obj, f"{actor.role} {verb} {field} before its ProtocolSendComplete")
            elif name == "status" and not write:
                self.report("STATUS-BEFORE-COMPLETE", obj, f"{actor.role} read Status before the send completed")
            elif name == "child_ref_count":
                self.report("CHILDCOUNT-NOT-OWNER", obj, f"{actor.role} {verb} ChildRefCount while it is in flight")
            else:
                self.report("OWN-AFTER-SEND", obj, f"{actor.role} {verb} {field} between send and completion")
        elif completed_by is not None and actor is completed_by:
            rule = "NDIS5-MINIPORT-COMPLETE" if packet else "MINIPORT-AFTER-COMPLETE"
            self.report(rule, obj, f"{actor.role} {verb} {field} after completing it")
        elif name == "child_ref_count":
            self.report(
                "CHILDCOUNT-NOT-OWNER", obj, f"{actor.role} {verb} ChildRefCount of an NBL owned by {holder.role}"
            )
        else:
            self.report("OWN-AFTER-SEND", obj, f"{actor.role} {verb} {field} of a descriptor owned by {holder.role}")

    def on_mdl_access(self, mdl: Mdl, name: str, write: bool) -> None:
        """A driver touched an MDL that is freed or referenced by an NBL in flight."""
        actor = self.actor
        verb = "wrote" if write else "read"
        if _oga(mdl, "_v_holder") is FREED:
            self.report("UAF-QUARANTINE", mdl, f"{actor.role} {verb} {name} of a freed MDL")
            return
        for ref in _oga(mdl, "_v_refs"):
            if actor in _oga(ref, "_v_path") and actor is not _oga(ref, "_v_holder"):
                rule = "NDIS5-PENDING" if isinstance(ref, NdisPacket) else "OWN-AFTER-SEND"
                self.report(rule, mdl, f"{actor.role} {verb} {name} while {self.describe(ref)} is in flight")
                return

    def on_nbl_write(self, nbl: CheckedNetBufferList, name: str, value: Any) -> None:
        """A driver wrote an NBL field: ownership first, then the field's own rules."""
        actor = self.actor
        if actor is not _oga(nbl, "_v_holder"):
            self.on_access(nbl, name, True)
            return
        origin = _oga(nbl, "_v_origin")
        if name == "next":
            _osa(nbl, "_v_next_written", True)
        elif name == "status":
            _osa(nbl, "_v_status_written", True)
        elif name == "parent_net_buffer_list":
            if actor is not origin:
                self.report(
                    "PARENT-PTR-OVERWRITE",
                    nbl,
                    f"{actor.role} overwrote ParentNetBufferList of an NBL from {origin.role}",
                )
        elif name == "first_net_buffer":
            if actor is not origin:
                self.report(
                    "NB-LIST-IMMUTABLE", nbl, f"{actor.role} replaced FirstNetBuffer of an NBL from {origin.role}"
                )
        elif name in _NBL_FIELDS_NDIS_PRIVATE and value is not _oga(nbl, name):
            self.report(
                "POOL-ORIGIN", nbl, f"{actor.role} overwrote the NDIS-private {name} (an NBL copied or forged?)"
            )

    def on_nb_write(self, nb: CheckedNetBuffer, name: str, value: Any) -> None:
        """A driver wrote an NB field."""
        actor = self.actor
        if actor is not _oga(nb, "_v_holder"):
            self.on_access(nb, name, True)
            return
        if name == "next" and actor is not _oga(nb, "_v_origin"):
            self.report("NB-LIST-IMMUTABLE", nb, f"{actor.role} changed Next of an NB created by {nb._v_origin.role}")
        elif name == "mdl_chain":
            leaked = self._retreat_mdls(_oga(nb, "mdl_chain"), nb)
            if leaked and value is not _oga(nb, "mdl_chain"):
                self.report(
                    "RETREAT-LEAK",
                    nb,
                    f"MdlChain re-pointed while retreat-allocated {self.describe(leaked[0])} is chained",
                )
        elif name == "ndis_pool_handle" and value is not _oga(nb, "ndis_pool_handle"):
            self.report("POOL-ORIGIN", nb, f"{actor.role} overwrote the NDIS-private NdisPoolHandle")

    def forge(self, obj: _D) -> _D:
        """``copy.copy`` of a descriptor: a struct copy, which NDIS forbids (POOL-ORIGIN); returns the copy."""
        cls = type(obj)
        clone = object.__new__(cls)
        for klass in cls.__mro__:
            for slot in getattr(klass, "__slots__", ()):
                try:
                    value = _oga(obj, slot)
                except AttributeError:
                    continue
                # arrays are inline in the C struct: the copy gets its own (pointers inside it are shared)
                if isinstance(value, CheckedSlots):
                    value = CheckedSlots(clone, value._v_name, list.__iter__(value))
                elif isinstance(value, list):
                    value = list(value)
                _osa(clone, slot, value)
        _osa(clone, "_v_forged", f"copy of {self.describe(obj)}")
        _osa(clone, "_v_holder", self.actor)
        self.report("POOL-ORIGIN", clone, "a descriptor made by copying a struct, not allocated from an NDIS pool")
        return clone

    # --- creation and free -------------------------------------------------------------------------------------

    def on_nbl_allocated(self, nbl: NetBufferList) -> None:
        """An NBL (and what came with it) was handed out to the acting driver."""
        actor = self.actor
        _osa(nbl, "_v_holder", actor)
        _osa(nbl, "_v_origin", actor)
        _osa(nbl, "_v_state", OwnerState.DRIVER)
        _oga(nbl, "_v_path").clear()
        _osa(nbl, "_v_completed_by", None)
        _osa(nbl, "_v_next_written", True)
        _osa(nbl, "_v_next_link", None)
        nb = _oga(nbl, "first_net_buffer")
        while nb is not None:
            _osa(nb, "_v_holder", actor)
            _osa(nb, "_v_origin", actor)
            _osa(nb, "_v_nbl", nbl)
            nb = _oga(nb, "next")
        ctx = _oga(nbl, "context")
        while ctx is not None:
            if isinstance(ctx, CheckedNblContext):
                _osa(ctx, "_v_nbl", nbl)
            ctx = _oga(ctx, "next")

    def on_nbl_allocated_context(self, nbl: NetBufferList, ctx: NblContext) -> None:
        """A NET_BUFFER_LIST_CONTEXT was linked to ``nbl``: its fields follow the NBL's owner state."""
        if isinstance(ctx, CheckedNblContext):
            _osa(ctx, "_v_nbl", nbl)

    def on_nb_allocated(self, nb: NetBuffer) -> None:
        """A standalone NB was handed out to the acting driver."""
        _osa(nb, "_v_holder", self.actor)
        _osa(nb, "_v_origin", self.actor)
        _osa(nb, "_v_nbl", None)

    def on_freed(self, obj: Any) -> None:
        """A descriptor went back to NDIS: quarantine it."""
        if isinstance(obj, CheckedNetBufferList | CheckedNetBuffer | CheckedMdl | CheckedNdisPacket):
            _osa(obj, "_v_holder", FREED)
        if isinstance(obj, CheckedNetBufferList | CheckedNdisPacket):
            _osa(obj, "_v_state", OwnerState.FREED)
        self.ndis.quarantine.append(obj)
        if isinstance(obj, CheckedNetBuffer):
            mdl = _oga(obj, "_mdl")
            if mdl is not None:  # the MDL and data preallocated with the NB go back with it (§2.1)
                self.on_freed(mdl)

    def is_freed(self, obj: Any) -> bool:
        """True for a quarantined descriptor."""
        return isinstance(obj, CheckedNetBufferList | CheckedNetBuffer | CheckedMdl | CheckedNdisPacket) and (
            _oga(obj, "_v_holder") is FREED
        )

    def _not_from_pool(self, obj: Any) -> bool:
        checked = (CheckedNetBufferList, CheckedNetBuffer, CheckedNdisPacket)
        if isinstance(obj, checked):
            return _oga(obj, "_v_forged") is not None
        return True

    def _owned_by_actor(self, obj: Any, call: str) -> bool:
        """The common part of a call on a descriptor: False (skip the call) when it is freed or held elsewhere."""
        actor = self.actor
        if self.is_freed(obj):
            self.report("UAF-QUARANTINE", obj, f"{call} on a freed descriptor")
            return False
        if self._not_from_pool(obj) and isinstance(obj, NetBufferList | NetBuffer | NdisPacket):
            self.report("POOL-ORIGIN", obj, f"{call} on a descriptor that was not allocated from an NDIS pool")
            return False
        holder = _oga(obj, "_v_holder") if isinstance(obj, NetBufferList | NetBuffer | NdisPacket) else actor
        if holder is not actor:
            if isinstance(obj, NdisPacket):
                self.report("NDIS5-PENDING", obj, f"{call} by {actor.role} while {holder.role} holds the packet")
            else:
                self.report("OWN-AFTER-SEND", obj, f"{call} by {actor.role} while {holder.role} holds it")
            return False
        return True

    def check_pool_usable(self, pool: Any, call: str) -> None:
        """Allocating from a freed pool."""
        if pool.freed:
            self.report("UAF-QUARANTINE", pool, f"{call} from a pool that was freed")

    def check_allocate_and(
        self, pool: Any, context_size: int, context_backfill: int, mdl: Mdl | None, offset: int, length: int
    ) -> None:
        """NdisAllocateNetBufferAndNetBufferList's preconditions (DOC §2.1)."""
        self.check_pool_usable(pool, "NdisAllocateNetBufferAndNetBufferList")
        params = pool.params
        if not params.f_allocate_net_buffer or params.data_size:
            self.report(
                "POOL-ORIGIN",
                pool,
                "NdisAllocateNetBufferAndNetBufferList needs a pool with fAllocateNetBuffer TRUE and DataSize 0",
            )
        self.check_context_sizes(pool, context_size, context_backfill, MEMORY_ALLOCATION_ALIGNMENT)
        if mdl is None and (offset or length):
            self.report("REUSE-CONSISTENCY", pool, "MdlChain NULL with a DataOffset or DataLength")
        elif mdl is not None and offset + length > self._chain_length(mdl):
            self.report("REUSE-CONSISTENCY", pool, f"DataOffset+DataLength {offset + length} beyond the MDL chain")

    def check_context_sizes(self, obj: object, size: int, backfill: int, multiple: int) -> None:
        """Context sizes must be multiples of ``multiple`` (DOC §2.1)."""
        if size < 0 or backfill < 0 or size % multiple or backfill % multiple:
            self.report("CTX-LIFO", obj, f"context size {size}/backfill {backfill} not a multiple of {multiple}")

    def check_free_nbl(self, nbl: NetBufferList, call: str, kind: int, derive: int | None) -> bool:
        """Every rule about freeing an NBL; False when the free must be skipped to keep the model sane."""
        actor = self.actor
        if self.is_freed(nbl):
            self.report("UAF-QUARANTINE", nbl, f"{call} of an NBL that is already freed")
            return False
        if self._not_from_pool(nbl):
            self.report("POOL-ORIGIN", nbl, f"{call} of an NBL not allocated from an NDIS pool (struct copy?)")
            return False
        holder = _oga(nbl, "_v_holder")
        if holder is not actor:
            if actor in _oga(nbl, "_v_path"):
                self.report("OWN-AFTER-SEND", nbl, f"{call} while the NBL is in flight")
            else:
                self.report("FREE-KIND", nbl, f"{call} by {actor.role} of an NBL held by {holder.role}")
            return False
        origin = _oga(nbl, "_v_origin")
        if origin is not actor:
            self.report("FREE-KIND", nbl, f"{call} by {actor.role} of an NBL from {origin.role}: return or complete it")
            return False
        real_kind = _oga(nbl, "_kind")
        if real_kind != kind:
            self.report("FREE-KIND", nbl, f"{call} of a {NBL_KIND_NAMES[real_kind]} NBL")
        elif derive is not None and derive != _oga(nbl, "_derive"):
            what = "flags" if kind == NBL_KIND_CLONE else "DataOffsetDelta"
            self.report("FREE-KIND", nbl, f"{call} with {what} {derive:#x}, allocated with {_oga(nbl, '_derive'):#x}")
        if _oga(nbl, "child_ref_count") > 0:
            self.report("PARENT-FREED-WITH-CHILDREN", nbl, f"{call} with ChildRefCount {_oga(nbl, 'child_ref_count')}")
        if _oga(nbl, "ndis_pool_handle") is not _oga(nbl, "_pool"):
            self.report("POOL-ORIGIN", nbl, f"{call}: NdisPoolHandle does not name the pool the NBL came from")
        ctx = _oga(nbl, "context")
        if ctx is not _oga(nbl, "_ctx_base") or (
            ctx is not None and _oga(ctx, "offset") != _oga(nbl, "_ctx_base_offset")
        ):
            self.report("CTX-LIFO", nbl, f"{call} with NdisAllocateNetBufferListContext context still allocated")
        nb = _oga(nbl, "first_net_buffer")
        seen = 0
        while nb is not None and seen < 1 << 16:
            seen += 1
            if _oga(nb, "_owner") is not nbl and not self.is_freed(nb) and kind == NBL_KIND_POOL:
                self.report("NB-BEFORE-NBL", nb, f"NdisAllocateNetBuffer NB still in {self.describe(nbl)} at {call}")
            # fragments and reassembled NBLs: their Free* call advances by DataOffsetDelta and frees NDIS's header
            leaked = self._retreat_mdls(_oga(nb, "mdl_chain"), nb) if kind in (NBL_KIND_POOL, NBL_KIND_CLONE) else []
            if leaked:
                self.report(
                    "RETREAT-LEAK", nbl, f"{call} with retreat-allocated {self.describe(leaked[0])} still chained"
                )
            nb = _oga(nb, "next")
        return True

    def check_free_nb(self, nb: NetBuffer, call: str) -> bool:
        """NdisFreeNetBuffer: only standalone NBs, owned, not freed."""
        if not self._owned_by_actor(nb, call):
            return False
        if _oga(nb, "_owner") is not None:
            self.report("NB-BEFORE-NBL", nb, f"{call} of the NB preallocated with its NBL (it goes with the NBL)")
            return False
        leaked = self._retreat_mdls(_oga(nb, "mdl_chain"), nb)
        if leaked:
            self.report("RETREAT-LEAK", nb, f"{call} with retreat-allocated {self.describe(leaked[0])} still chained")
        return True

    def check_free_mdl(self, mdl: Mdl, call: str) -> bool:
        """IoFreeMdl / NdisFreeMdl / NdisFreeBuffer: the right routine for the MDL's kind, not locked, not in
        flight, not freed."""
        actor = self.actor
        if isinstance(mdl, CheckedMdl) and _oga(mdl, "_v_holder") is FREED:
            self.report("UAF-QUARANTINE", mdl, f"{call} of an MDL that is already freed")
            return False
        for nbl in _oga(mdl, "_v_refs") if isinstance(mdl, CheckedMdl) else ():
            if actor in _oga(nbl, "_v_path"):
                self.report("OWN-AFTER-SEND", mdl, f"{call} while {self.describe(nbl)} is in flight")
                return False
        kind = _oga(mdl, "_kind")
        if kind == MDL_KIND_PREALLOCATED:
            self.report("NB-BEFORE-NBL", mdl, f"{call} of an MDL preallocated with its NB (it goes with the NB)")
            return False
        wanted = {
            "IoFreeMdl": (MDL_KIND_IO, MDL_KIND_BUFFER),
            "NdisFreeBuffer": (MDL_KIND_IO, MDL_KIND_BUFFER),
            "NdisFreeMdl": (MDL_KIND_NDIS,),
        }[call]
        if kind not in wanted:
            self.report("FREE-KIND", mdl, f"{call} of an MDL from {MDL_KIND_NAMES[kind]}")
            if kind in (MDL_KIND_RETREAT, MDL_KIND_DERIVED, MDL_KIND_EMBEDDED):
                return False
        if _oga(mdl, "mdl_flags") & MDL_PAGES_LOCKED:
            self.report("MDL-LOCK-BALANCE", mdl, f"{call} of an MDL whose pages are still locked (no MmUnlockPages)")
            self.locked_mdls.pop(id(mdl), None)
        return True

    def check_free_pool(self, pool: Any, call: str) -> bool:
        """Freeing a pool: not twice; outstanding descriptors are POOL-FREE-OUTSTANDING (the free proceeds)."""
        if pool.freed:
            self.report("UAF-QUARANTINE", pool, f"{call} of a pool already freed")
            return False
        if pool.allocated:
            self.report("POOL-FREE-OUTSTANDING", pool, f"{call} with {pool.allocated} descriptors outstanding")
        return True

    def check_free_memory(self, buffer: memoryview) -> bool:
        """NdisFreeMemory of memory NDIS allocated, once."""
        obj = buffer.obj
        if self._freed_memory.get(id(obj)) is obj:
            self.report("UAF-QUARANTINE", "memory", "NdisFreeMemory of memory already freed")
            return False
        self._freed_memory[id(obj)] = obj
        return True

    # --- MDLs ------------------------------------------------------------------------------------------------------

    def check_nonpaged(self, mdl: Mdl, call: str) -> None:
        """NdisAllocateMdl / MmBuildMdlForNonPagedPool / NdisAllocateBuffer need nonpaged memory (DOC §1.3)."""
        if not self.ndis.is_nonpaged(_oga(mdl, "data")):
            self.report("MDL-LOCK-BALANCE", mdl, f"{call} on pageable memory (it accepts only nonpaged memory)")

    def report_mdl_lock(self, mdl: Mdl, message: str) -> None:
        """A lock/unlock imbalance."""
        self.report("MDL-LOCK-BALANCE", mdl, message)

    def on_locked(self, mdl: Mdl, locked: bool) -> None:
        """Track locked MDLs for the end-of-run check."""
        if locked:
            self.locked_mdls[id(mdl)] = mdl
        else:
            self.locked_mdls.pop(id(mdl), None)

    def check_partial(self, source: Mdl, target: Mdl, offset: int, length: int) -> None:
        """IoBuildPartialMdl inside the source."""
        if offset < 0 or length < 0 or offset + length > _oga(source, "byte_count"):
            self.report("REUSE-CONSISTENCY", target, f"IoBuildPartialMdl of {offset}+{length} beyond the source MDL")

    # --- NB data space ------------------------------------------------------------------------------------------

    def check_net_buffer_call(self, nb: NetBuffer | NetBufferList, call: str) -> bool:
        """Retreat/advance and the like on an NB the actor must own."""
        return self._owned_by_actor(nb, call)

    def on_retreat_alloc(self, nb: NetBuffer, delta: int, allocated: int) -> None:
        """RETREAT-ALLOC: a performance warning, the data start moved beyond the backfill."""
        mdl = _oga(nb, "mdl_chain")
        if isinstance(mdl, CheckedMdl):
            _osa(mdl, "_v_retreat_nb", nb)
        self.report(
            "RETREAT-ALLOC",
            nb,
            f"retreat by {delta} with only {delta - allocated + _oga(nb, 'data_offset')} bytes of backfill: "
            f"NDIS allocated an MDL and a {allocated}-byte buffer",
        )

    def check_advance(self, nb: NetBuffer, delta: int) -> None:
        """ADVANCE-UNDERFLOW (DERIVED: ReactOS asserts DataLength >= delta)."""
        if delta > _oga(nb, "data_length"):
            self.report("ADVANCE-UNDERFLOW", nb, f"advance by {delta} with DataLength {_oga(nb, 'data_length')}")

    def check_context_free(self, nbl: NetBufferList, size: int) -> bool:
        """NdisFreeNetBufferListContext: LIFO, never the allocate call's context, pointer-size multiples."""
        if not self._owned_by_actor(nbl, "NdisFreeNetBufferListContext"):
            return False
        self.check_context_sizes(nbl, size, 0, POINTER_SIZE)
        ctx = _oga(nbl, "context")
        if ctx is None:
            self.report("CTX-LIFO", nbl, "NdisFreeNetBufferListContext with no context allocated")
            return False
        if ctx is _oga(nbl, "_ctx_base") and _oga(ctx, "offset") + size > _oga(nbl, "_ctx_base_offset"):
            self.report(
                "CTX-LIFO", nbl, "NdisFreeNetBufferListContext of context reserved by the allocate call's ContextSize"
            )
            return False
        return True

    # --- derived NBLs -------------------------------------------------------------------------------------------

    def check_derive_source(self, original: NetBufferList, call: str) -> bool:
        """The NBL a clone/fragment/reassembly derives from must be held by the actor."""
        return self._owned_by_actor(original, call)

    def check_link_child(self, child: NetBufferList, parent: NetBufferList) -> None:
        """Setting ParentNetBufferList and bumping ChildRefCount (§2.5)."""
        actor = self.actor
        if _oga(parent, "_v_holder") is not actor:
            self.report("CHILDCOUNT-NOT-OWNER", parent, f"{actor.role} bumped ChildRefCount of an NBL it does not hold")
        if _oga(child, "_v_origin") is not actor:
            self.report("PARENT-PTR-OVERWRITE", child, "ParentNetBufferList set on an NBL received from another driver")

    def check_unlink_child(self, child: NetBufferList) -> None:
        """A child without ParentNetBufferList, or a parent whose count would go negative."""
        parent = _oga(child, "parent_net_buffer_list")
        if parent is None:
            self.report("CHILDCOUNT-NOT-OWNER", child, "child released without ParentNetBufferList set")
        elif _oga(parent, "child_ref_count") <= 0:
            self.report("CHILDCOUNT-NOT-OWNER", parent, "ChildRefCount decremented below zero")

    # --- chains -------------------------------------------------------------------------------------------------

    @staticmethod
    def _chain_length(mdl: Mdl | None) -> int:
        total = 0
        hops = 0
        while mdl is not None and hops < 1 << 16:
            total += _oga(mdl, "byte_count")
            mdl = _oga(mdl, "next")
            hops += 1
        return total

    def _retreat_mdls(self, mdl: Mdl | None, nb: NetBuffer) -> list[Mdl]:
        """Live retreat-allocated MDLs in a chain that belong to ``nb`` (allocated by a retreat of ``nb``, or of an
        unknown NB): those of another NB whose chain ``nb`` shares (a clone with original MDLs) are not its leak."""
        out: list[Mdl] = []
        hops = 0
        while mdl is not None and hops < 1 << 16:
            owner = _oga(mdl, "_v_retreat_nb") if isinstance(mdl, CheckedMdl) else None
            if _oga(mdl, "_retreat") and not self.is_freed(mdl) and (owner is None or owner is nb):
                out.append(mdl)
            mdl = _oga(mdl, "next")
            hops += 1
        return out

    def walk_nbls(self, chain: NetBufferList, call: str) -> list[NetBufferList]:
        """The NBLs of a chain in order; a chain that loops is LIST-LINKAGE and a bug check."""
        out: list[NetBufferList] = []
        seen: set[int] = set()
        nbl: NetBufferList | None = chain
        while nbl is not None:
            if id(nbl) in seen:
                self.bug_check("LIST-LINKAGE", nbl, f"{call}: the NBL chain is not NULL-terminated (it loops)")
            seen.add(id(nbl))
            out.append(nbl)
            nbl = _oga(nbl, "next")
        return out

    def _walk_mdls(self, mdl: Mdl | None, owner: object, call: str) -> list[Mdl]:
        out: list[Mdl] = []
        seen: set[int] = set()
        while mdl is not None:
            if id(mdl) in seen:
                self.bug_check("LIST-LINKAGE", owner, f"{call}: the MDL chain loops")
            seen.add(id(mdl))
            out.append(mdl)
            mdl = _oga(mdl, "next")
        return out

    def _check_nb_consistency(self, nb: NetBuffer, mdls: list[Mdl]) -> None:
        offset = _oga(nb, "data_offset")
        length = _oga(nb, "data_length")
        current = _oga(nb, "current_mdl")
        current_offset = _oga(nb, "current_mdl_offset")
        if not mdls:
            if offset or length or current is not None:
                self.report("REUSE-CONSISTENCY", nb, "no MdlChain but DataOffset/DataLength/CurrentMdl set")
            return
        total = sum(_oga(m, "byte_count") for m in mdls)
        if offset < 0 or length < 0 or offset + length > total:
            self.report(
                "REUSE-CONSISTENCY",
                nb,
                f"DataOffset {offset} + DataLength {length} beyond the MDL chain ({total} bytes)",
            )
            return
        expected, expected_offset = locate_offset(mdls[0], offset)
        if current is not expected or current_offset != expected_offset:
            self.report(
                "REUSE-CONSISTENCY",
                nb,
                "CurrentMdl/CurrentMdlOffset are not the MDL and offset reached by walking DataOffset from MdlChain",
            )

    # --- NDIS 6 send path ----------------------------------------------------------------------------------------

    def on_send(self, chain: NetBufferList | None, sender: Handle, receiver: Handle, call: str) -> int:
        """Validate a chain being sent by ``sender`` and hand it to ``receiver``; returns the number of NBLs."""
        if chain is None:
            self.report("LIST-LINKAGE", call, f"{call} with an empty chain")
            return 0
        nbls = self.walk_nbls(chain, call)
        for nbl in nbls:
            if self.is_freed(nbl):
                self.bug_check("UAF-QUARANTINE", nbl, f"{call} of a freed NBL")
            if not isinstance(nbl, CheckedNetBufferList):
                self.bug_check("POOL-ORIGIN", nbl, f"{call} of an NBL not allocated from an NDIS pool")
            if _oga(nbl, "_v_forged") is not None:
                self.report("POOL-ORIGIN", nbl, f"{call} of an NBL made by copying a struct")
            holder = _oga(nbl, "_v_holder")
            if holder is not sender:
                self.bug_check(
                    "LIST-LINKAGE", nbl, f"{call} by {sender.role} of an NBL held by {holder.role} (in two lists)"
                )
            link = _oga(nbl, "_v_next_link")
            if not _oga(nbl, "_v_next_written") and link is not None and _oga(nbl, "next") is link:
                self.report(
                    "LIST-LINKAGE", nbl, "Next still points into the completion chain it came back in (not reset)"
                )
            origin = _oga(nbl, "_v_origin")
            source = _oga(nbl, "source_handle")
            if origin is sender:
                if source is not sender:
                    self.report(
                        "SOURCEHANDLE-SET",
                        nbl,
                        f"SourceHandle is {source!r}, not the {sender.role} handle passed to {call}",
                    )
            elif _oga(nbl, "_v_received") is not None and source is not _oga(nbl, "_v_received")[0]:
                self.report(
                    "SOURCEHANDLE-FOREIGN", nbl, f"{sender.role} changed the SourceHandle of an NBL from {origin.role}"
                )
            if _oga(nbl, "child_ref_count") > 0:
                self.report(
                    "PARENT-PASSED-DOWN", nbl, f"sent with ChildRefCount {_oga(nbl, 'child_ref_count')}: keep parents"
                )
            mdls_all: list[Mdl] = []
            nb = _oga(nbl, "first_net_buffer")
            if nb is None:
                self.report("REUSE-CONSISTENCY", nbl, f"{call} of an NBL without a NET_BUFFER")
            seen: set[int] = set()
            while nb is not None:
                if id(nb) in seen:
                    self.bug_check("LIST-LINKAGE", nbl, f"{call}: the NB list loops")
                seen.add(id(nb))
                if self.is_freed(nb):
                    self.bug_check("UAF-QUARANTINE", nb, f"{call} of an NBL holding a freed NB")
                if isinstance(nb, CheckedNetBuffer) and _oga(nb, "_v_holder") is not sender:
                    self.bug_check("LIST-LINKAGE", nb, f"{call}: NB held by {_oga(nb, '_v_holder').role} (in two NBLs)")
                mdls = self._walk_mdls(_oga(nb, "mdl_chain"), nb, call)
                for mdl in mdls:
                    if self.is_freed(mdl):
                        self.report("UAF-QUARANTINE", mdl, f"{call} of an NB whose MDL chain holds a freed MDL")
                self._check_nb_consistency(nb, mdls)
                mdls_all.extend(mdls)
                nb = _oga(nb, "next")
            # hand over
            _oga(nbl, "_v_path").append(sender)
            self._set_holder(nbl, receiver)
            _osa(nbl, "_v_state", OwnerState.STACK)
            _osa(nbl, "_v_status_written", False)
            _osa(nbl, "_v_completed_by", None)
            if len(_oga(nbl, "_v_path")) == 1:
                _osa(nbl, "_v_sent_at", self.packet_index)
                _osa(nbl, "_v_mdls", mdls_all)
                for mdl in mdls_all:
                    if isinstance(mdl, CheckedMdl):
                        _oga(mdl, "_v_refs").append(nbl)
                self.in_flight[id(nbl)] = nbl
        return len(nbls)

    def on_filter_receive(self, chain: NetBufferList) -> None:
        """NDIS delivered a protocol's chain to FilterSendNetBufferLists: remember what the filter must restore."""
        nbl: NetBufferList | None = chain
        while nbl is not None:
            _osa(nbl, "_v_received", self._snapshot(nbl))
            nbl = _oga(nbl, "next")

    @staticmethod
    def _snapshot(nbl: NetBufferList) -> tuple[Any, ...]:
        nbs = []
        nb = _oga(nbl, "first_net_buffer")
        while nb is not None:
            nbs.append(
                (
                    nb,
                    _oga(nb, "mdl_chain"),
                    _oga(nb, "data_offset"),
                    _oga(nb, "data_length"),
                    _oga(nb, "current_mdl"),
                    _oga(nb, "current_mdl_offset"),
                )
            )
            nb = _oga(nb, "next")
        ctx = _oga(nbl, "context")
        return (
            _oga(nbl, "source_handle"),
            tuple(nbs),
            ctx,
            _oga(ctx, "offset") if ctx is not None else 0,
            _oga(nbl, "parent_net_buffer_list"),
        )

    def _set_holder(self, nbl: NetBufferList, holder: Handle) -> None:
        _osa(nbl, "_v_holder", holder)
        nb = _oga(nbl, "first_net_buffer")
        hops = 0
        while nb is not None and hops < 1 << 16:
            if isinstance(nb, CheckedNetBuffer):
                _osa(nb, "_v_holder", holder)
                _osa(nb, "_v_nbl", nbl)
            nb = _oga(nb, "next")
            hops += 1

    def _return_up(self, nbl: NetBufferList, completer: Handle) -> None:
        path = _oga(nbl, "_v_path")
        holder = path.pop() if path else _oga(nbl, "_v_origin")
        self._set_holder(nbl, holder)
        _osa(nbl, "_v_completed_by", completer)
        if not path:
            _osa(nbl, "_v_state", OwnerState.COMPLETED)
            self.in_flight.pop(id(nbl), None)
            for mdl in _oga(nbl, "_v_mdls"):
                refs = _oga(mdl, "_v_refs") if isinstance(mdl, CheckedMdl) else None
                if refs is not None and nbl in refs:
                    refs.remove(nbl)
            _osa(nbl, "_v_mdls", [])

    def on_miniport_complete(self, chain: NetBufferList | None, call: str) -> list[NetBufferList]:
        """NdisMSendNetBufferListsComplete: validate and return the NBLs the miniport may complete (in order)."""
        miniport = self.ndis.miniport_adapter_handle
        if chain is None:
            self.report("LIST-LINKAGE", call, f"{call} with an empty chain")
            return []
        out: list[NetBufferList] = []
        for nbl in self.walk_nbls(chain, call):
            if not isinstance(nbl, CheckedNetBufferList) or _oga(nbl, "_v_holder") is not miniport:
                self.report("MINIPORT-AFTER-COMPLETE", nbl, f"{call} of an NBL the miniport does not hold")
                continue
            status = _oga(nbl, "status")
            sent_at = _oga(nbl, "_v_sent_at")
            if not _oga(nbl, "_v_status_written"):
                self.report("STATUS-SET", nbl, f"{call} without writing NET_BUFFER_LIST_STATUS", sent_at)
            elif status not in SEND_COMPLETION_STATUSES:
                self.report("STATUS-SET", nbl, f"{call} with Status {status:#x}, not a send completion status", sent_at)
            self._return_up(nbl, miniport)
            out.append(nbl)
        return out

    def on_filter_complete(self, chain: NetBufferList | None, call: str) -> list[NetBufferList]:
        """NdisFSendNetBufferListsComplete: validate and return the NBLs that go up to the protocol."""
        filt = self.ndis.filter_handle
        if chain is None:
            self.report("LIST-LINKAGE", call, f"{call} with an empty chain")
            return []
        out: list[NetBufferList] = []
        for nbl in self.walk_nbls(chain, call):
            if self.is_freed(nbl):
                self.bug_check("UAF-QUARANTINE", nbl, f"{call} of a freed NBL")
            if not isinstance(nbl, CheckedNetBufferList) or _oga(nbl, "_v_holder") is not filt:
                self.report("OWN-AFTER-SEND", nbl, f"{call} of an NBL the filter does not hold")
                continue
            if _oga(nbl, "_v_origin") is filt:
                self.report("OWN-NBL-NOT-COMPLETED-UP", nbl, f"{call} of an NBL the filter allocated itself")
                continue
            if _oga(nbl, "child_ref_count") > 0:
                self.report(
                    "PARENT-FREED-WITH-CHILDREN", nbl, f"{call} with ChildRefCount {_oga(nbl, 'child_ref_count')}"
                )
            received = _oga(nbl, "_v_received")
            if received is not None and self._snapshot(nbl) != received:
                self.report(
                    "RESTORE-ON-COMPLETE",
                    nbl,
                    f"{call} of an NBL the filter modified and did not restore",
                    _oga(nbl, "_v_sent_at"),
                )
            _osa(nbl, "_v_received", None)
            self._return_up(nbl, filt)
            out.append(nbl)
        return out

    def mark_status_written(self, nbl: NetBufferList) -> None:
        """NDIS wrote Status on the miniport's behalf (the ``status`` argument of the completion)."""
        if isinstance(nbl, CheckedNetBufferList):
            _osa(nbl, "_v_status_written", True)

    def on_delivered(self, chain: NetBufferList) -> None:
        """A completion chain reached its originator: remember its links (LIST-LINKAGE "Next not reset")."""
        nbl: NetBufferList | None = chain
        while nbl is not None:
            nxt = _oga(nbl, "next")
            _osa(nbl, "_v_next_link", nxt)
            _osa(nbl, "_v_next_written", False)
            nbl = nxt

    # --- NDIS 5 ---------------------------------------------------------------------------------------------------

    def on_packet_allocated(self, packet: NdisPacket) -> None:
        """A packet was handed out to the acting driver."""
        _osa(packet, "_v_holder", self.actor)
        _osa(packet, "_v_origin", self.actor)
        _osa(packet, "_v_state", OwnerState.DRIVER)
        _oga(packet, "_v_path").clear()
        _osa(packet, "_v_completed_by", None)
        _osa(packet, "_v_completions", 0)

    def check_free_packet(self, packet: NdisPacket, call: str) -> bool:
        """NdisFreePacket: owned, not freed, from the driver's own pool (ndisprot checks NdisGetPoolFromPacket)."""
        if not self._owned_by_actor(packet, call):
            return False
        if _oga(packet, "_v_origin") is not self.actor:
            self.report("FREE-KIND", packet, f"{call} of a packet from {_oga(packet, '_v_origin').role}: return it")
            return False
        return True

    def check_reinitialize(self, packet: NdisPacket) -> bool:
        """NdisReinitializePacket: the caller's own packet, its buffers unchained first."""
        if not self._owned_by_actor(packet, "NdisReinitializePacket"):
            return False
        if _oga(packet, "_v_origin") is not self.actor:
            self.report(
                "NDIS5-REINIT-FOREIGN", packet, "NdisReinitializePacket of a packet the driver did not allocate"
            )
        head = _oga(packet, "head")
        if head is not None:
            self.report(
                "NDIS5-REINIT-LEAK",
                packet,
                f"NdisReinitializePacket with {self.describe(head)} still chained: its descriptor leaks",
            )
        return True

    def check_packet_call(self, packet: NdisPacket, call: str) -> bool:
        """Chain/unchain and OOB macros on a packet the actor must own."""
        return self._owned_by_actor(packet, call)

    def on_oob_written(self, packet: NdisPacket) -> None:
        """An NDIS_SET_PACKET_* macro or the OOB reset wrote the packet's OOB data."""
        if isinstance(packet, CheckedNdisPacket):
            _osa(packet, "_v_oob_written", True)

    def on_send_packets(self, packets: list[NdisPacket], sender: Handle, call: str) -> None:
        """NdisSendPackets: every packet owned by the sender, buffer chains sane, OOB reset on reuse."""
        miniport = self.ndis.miniport_adapter_handle
        seen: set[int] = set()
        for packet in packets:
            if id(packet) in seen:
                self.bug_check("NDIS5-PENDING", packet, f"{call} with the same packet twice")
            seen.add(id(packet))
            if self.is_freed(packet):
                self.bug_check("UAF-QUARANTINE", packet, f"{call} of a freed packet")
            if not isinstance(packet, CheckedNdisPacket):
                self.bug_check("POOL-ORIGIN", packet, f"{call} of a packet not allocated from a packet pool")
            holder = _oga(packet, "_v_holder")
            if holder is not sender:
                self.bug_check(
                    "NDIS5-PENDING", packet, f"{call} of a packet held by {holder.role}: reused before its completion"
                )
            buffers = self._walk_mdls(_oga(packet, "head"), packet, call)
            for buffer in buffers:
                if self.is_freed(buffer):
                    self.report("UAF-QUARANTINE", buffer, f"{call} of a packet chaining a freed buffer")
            oob = _oga(packet, "oob")
            if _oga(packet, "_v_completions") and not _oga(packet, "_v_oob_written"):
                stale = [
                    name
                    for name in ("status", "time_to_send", "header_size", "size_media_specific_info")
                    if _oga(oob, name)
                ]
                if _oga(oob, "media_specific_information") is not None:
                    stale.append("media_specific_information")
                if stale:
                    self.report(
                        "NDIS5-OOB-STALE", packet, f"reused with the previous send's OOB {', '.join(stale)} not reset"
                    )
            _oga(packet, "_v_path").append(sender)
            _osa(packet, "_v_holder", miniport)
            _osa(packet, "_v_state", OwnerState.STACK)
            _osa(packet, "_v_completed_by", None)
            self.packets_in_flight[id(packet)] = packet
            for buffer in buffers:
                if isinstance(buffer, CheckedMdl):
                    _oga(buffer, "_v_refs").append(packet)

    def on_packet_complete(self, packet: NdisPacket, call: str) -> Handle | None:
        """NdisMSendComplete: exactly once per packet the miniport holds; returns the driver to complete to."""
        miniport = self.ndis.miniport_adapter_handle
        if not isinstance(packet, CheckedNdisPacket) or _oga(packet, "_v_holder") is not miniport:
            self.report("NDIS5-MINIPORT-COMPLETE", packet, f"{call} of a packet the miniport does not hold")
            return None
        path = _oga(packet, "_v_path")
        sender: Handle = path.pop() if path else _oga(packet, "_v_origin")
        _osa(packet, "_v_holder", sender)
        _osa(packet, "_v_completed_by", miniport)
        _osa(packet, "_v_state", OwnerState.COMPLETED)
        _osa(packet, "_v_completions", _oga(packet, "_v_completions") + 1)
        _osa(packet, "_v_oob_written", False)
        self.packets_in_flight.pop(id(packet), None)
        buffer = _oga(packet, "head")
        hops = 0
        while buffer is not None and hops < 1 << 16:
            refs = _oga(buffer, "_v_refs") if isinstance(buffer, CheckedMdl) else None
            if refs is not None:
                while packet in refs:
                    refs.remove(packet)
            buffer = _oga(buffer, "next")
            hops += 1
        return sender

    # --- end of run ---------------------------------------------------------------------------------------------------

    def finish(self) -> list[Finding]:
        """End-of-run checks (call after the strategy unbound and its pools were freed): NBLs or packets still in
        flight (POOL-FREE-OUTSTANDING, "unbind with NBLs in flight"), MDLs still locked (MDL-LOCK-BALANCE),
        descriptors never freed (SDV-ALLOC-FREE). Returns every kept finding."""
        for nbl in list(self.in_flight.values()):
            self.report("POOL-FREE-OUTSTANDING", nbl, "still in flight at the end of the run (never completed)")
        for packet in list(self.packets_in_flight.values()):
            self.report("POOL-FREE-OUTSTANDING", packet, "still pending at the end of the run (never completed)")
        for mdl in list(self.locked_mdls.values()):
            self.report("MDL-LOCK-BALANCE", mdl, "pages still locked at the end of the run (no MmUnlockPages)")
        c = self.ndis.counters
        for kind, label in (
            ("nbl", "NET_BUFFER_LISTs"),
            ("nb", "NET_BUFFERs"),
            ("mdl", "MDLs"),
            ("ctx", "NET_BUFFER_LIST_CONTEXT areas"),
            ("packet", "NDIS_PACKETs"),
            ("buffer", "NDIS_BUFFERs"),
            ("data", "data buffers"),
        ):
            out = getattr(c, f"{kind}_outstanding")
            if out:
                self.report("SDV-ALLOC-FREE", label, f"{out} {label} allocated and never freed")
        return self.findings
