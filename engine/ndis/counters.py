"""Operation accounting: what every modelled DDK call did, counted exactly, and an optional cost profile.

:class:`OpCounters` is a bag of plain ``int`` attributes that the DDK calls increment inline. The counts are a
property of the call sequence a strategy makes, not of timing or of the verifier: the checked and the unchecked
run of one strategy over one trace count the same. The counting conventions (what is "an interlocked op", which
bytes count as zeroed) are written where each call is modelled and summarised in :data:`COUNT_DOCS`; the reports
show these names.

:class:`CostProfile` turns counts into a modelled cost. There are no default costs anywhere: NDIS_MODEL.md §5 found no
public per-call figures, so every number must come from the user (measured, or labelled as an assumption).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from operator import attrgetter
from pathlib import Path
from typing import Any

from ndis_replay.errors import ConfigError

#: Event counts: they only grow, a per-send-call difference attributes them to packets, a cost profile prices them.
COUNT_DOCS: dict[str, str] = {
    "ddk_calls": "modelled DDK calls and macros, one per call",
    "nbl_allocs": "NET_BUFFER_LISTs handed out (pool, clone, fragment, reassembled)",
    "nbl_frees": "NET_BUFFER_LISTs given back",
    "nb_allocs": "NET_BUFFERs handed out, including the one preallocated with an NBL",
    "nb_frees": "NET_BUFFERs given back, including preallocated ones freed with their NBL",
    "mdl_allocs": "MDLs allocated (IoAllocateMdl, NdisAllocateMdl, retreat, preallocated, built for derived NBLs)",
    "mdl_frees": "MDLs freed",
    "ctx_allocs": "context areas reserved (an allocate call's ContextSize, NdisAllocateNetBufferListContext)",
    "ctx_frees": "NET_BUFFER_LIST_CONTEXT areas released",
    "packet_allocs": "NDIS 5 NDIS_PACKETs allocated",
    "packet_frees": "NDIS 5 NDIS_PACKETs freed",
    "buffer_allocs": "NDIS 5 NDIS_BUFFERs allocated (NdisAllocateBuffer)",
    "buffer_frees": "NDIS 5 NDIS_BUFFERs freed",
    "data_allocs": "data buffers allocated by or through NDIS (DataSize pools, retreat, NdisAllocateMemory…)",
    "data_frees": "data buffers freed",
    "pool_hits": "allocations served from a lookaside/pool free list",
    "pool_misses": "allocations a free list could not serve (they allocate system memory)",
    "sys_allocs": "system memory allocations (pool misses, overflow packets, extra contexts, data buffers, big MDLs)",
    "sys_frees": "system memory frees",
    "bytes_zeroed": "bytes NDIS initialises to zero (descriptor headers at allocation, NdisZeroMemory)",
    "bytes_copied": "bytes copied (NdisMoveMemory, NdisCopyFromNetBufferToNetBuffer)",
    "mdl_builds": "PFN arrays filled (MmBuildMdlForNonPagedPool, MmProbeAndLockPages, IoBuildPartialMdl…)",
    "pages_locked": "pages locked by MmProbeAndLockPages",
    "pages_unlocked": "pages unlocked by MmUnlockPages",
    "interlocked_ops": "interlocked operations: SLIST push/pop of lookaside lists, InterlockedIncrement/Decrement",
    "spinlock_acquires": "spin-lock acquisitions (NDIS 5 packet pools)",
    "nbls_sent": "NBLs passed to NdisSendNetBufferLists / NdisFSendNetBufferLists",
    "nbls_completed": "NBLs completed by NdisMSendNetBufferListsComplete",
    "packets_sent": "NDIS 5 packets passed to NdisSendPackets",
    "packets_completed": "NDIS 5 packets completed by NdisMSendComplete",
}
COUNT_FIELDS: tuple[str, ...] = tuple(COUNT_DOCS)

#: Descriptor kinds with an outstanding count (allocs − frees) and its peak.
KINDS: tuple[str, ...] = ("nbl", "nb", "mdl", "ctx", "packet", "buffer", "data")
#: Gauges: current values and peaks, not costs.
GAUGE_DOCS: dict[str, str] = {
    **{f"{kind}_peak": f"highest number of {kind} descriptors outstanding at once" for kind in KINDS},
    "mem_bytes": "modelled bytes of descriptor and data memory held from the system (in use or cached in pools)",
    "mem_peak": "highest mem_bytes",
}
GAUGE_FIELDS: tuple[str, ...] = tuple(GAUGE_DOCS)
OUTSTANDING_FIELDS: tuple[str, ...] = tuple(f"{kind}_outstanding" for kind in KINDS)

_get_counts = attrgetter(*COUNT_FIELDS)
_get_gauges = attrgetter(*GAUGE_FIELDS)


class OpCounters:
    """Exact, deterministic operation counts of one runtime (:data:`COUNT_DOCS`, :data:`GAUGE_DOCS`).

    Plain ``int`` attributes, incremented inline by the DDK calls. ``<kind>_outstanding`` is computed
    (allocs − frees). :meth:`counts` is the cheap fixed-order tuple for per-send-call attribution;
    :meth:`snapshot` the readable dict; ``a - b`` the field-by-field difference (for gauges, the net change).
    """

    __slots__ = COUNT_FIELDS + GAUGE_FIELDS

    ddk_calls: int
    nbl_allocs: int
    nbl_frees: int
    nb_allocs: int
    nb_frees: int
    mdl_allocs: int
    mdl_frees: int
    ctx_allocs: int
    ctx_frees: int
    packet_allocs: int
    packet_frees: int
    buffer_allocs: int
    buffer_frees: int
    data_allocs: int
    data_frees: int
    pool_hits: int
    pool_misses: int
    sys_allocs: int
    sys_frees: int
    bytes_zeroed: int
    bytes_copied: int
    mdl_builds: int
    pages_locked: int
    pages_unlocked: int
    interlocked_ops: int
    spinlock_acquires: int
    nbls_sent: int
    nbls_completed: int
    packets_sent: int
    packets_completed: int
    nbl_peak: int
    nb_peak: int
    mdl_peak: int
    ctx_peak: int
    packet_peak: int
    buffer_peak: int
    data_peak: int
    mem_bytes: int
    mem_peak: int

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    # outstanding descriptors, derived so that the hot path increments one attribute less
    def sys_alloc(self, size: int) -> None:
        """One system memory allocation of ``size`` bytes held from now on: ``sys_allocs``, ``mem_bytes`` and its
        peak (the allocation paths of pools, MDLs, contexts and data buffers all count it this way)."""
        self.sys_allocs += 1
        self.mem_bytes += size
        if self.mem_bytes > self.mem_peak:
            self.mem_peak = self.mem_bytes

    @property
    def nbl_outstanding(self) -> int:
        """NET_BUFFER_LISTs allocated and not freed."""
        return self.nbl_allocs - self.nbl_frees

    @property
    def nb_outstanding(self) -> int:
        """NET_BUFFERs allocated and not freed."""
        return self.nb_allocs - self.nb_frees

    @property
    def mdl_outstanding(self) -> int:
        """MDLs allocated and not freed."""
        return self.mdl_allocs - self.mdl_frees

    @property
    def ctx_outstanding(self) -> int:
        """Context areas reserved and not released."""
        return self.ctx_allocs - self.ctx_frees

    @property
    def packet_outstanding(self) -> int:
        """NDIS 5 packets allocated and not freed."""
        return self.packet_allocs - self.packet_frees

    @property
    def buffer_outstanding(self) -> int:
        """NDIS 5 buffers allocated and not freed."""
        return self.buffer_allocs - self.buffer_frees

    @property
    def data_outstanding(self) -> int:
        """Data buffers allocated and not freed."""
        return self.data_allocs - self.data_frees

    def counts(self) -> tuple[int, ...]:
        """The event counts in :data:`COUNT_FIELDS` order (one C-level attrgetter call)."""
        values: tuple[int, ...] = _get_counts(self)
        return values

    def snapshot(self) -> dict[str, int]:
        """Every count, outstanding value and gauge by name."""
        out = dict(zip(COUNT_FIELDS, _get_counts(self), strict=True))
        for name in OUTSTANDING_FIELDS:
            out[name] = getattr(self, name)
        out.update(zip(GAUGE_FIELDS, _get_gauges(self), strict=True))
        return out

    def copy(self) -> OpCounters:
        """An independent copy (to diff against later)."""
        other = OpCounters()
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        return other

    def __sub__(self, other: OpCounters) -> OpCounters:
        """Field-by-field difference: counts done in between; for gauges the net change."""
        if not isinstance(other, OpCounters):
            return NotImplemented
        out = OpCounters()
        for name in self.__slots__:
            setattr(out, name, getattr(self, name) - getattr(other, name))
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OpCounters):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        busy = {name: value for name, value in self.snapshot().items() if value}
        return f"OpCounters({busy})"


class CostProfile:
    """User-supplied nanoseconds per counted operation, turning counts into a modelled cost.

    Only names from :data:`COUNT_FIELDS` may be priced; a missing name costs nothing. ``name`` and ``source`` say
    where the numbers come from (a measurement, or an assumption), so reports can label the modelled column.
    """

    __slots__ = ("name", "ns", "source")

    def __init__(self, ns: Mapping[str, float], *, name: str = "", source: str = "") -> None:
        checked: dict[str, float] = {}
        for counter, value in ns.items():
            if counter not in COUNT_DOCS:
                raise ConfigError("cost profile counter", counter, "is not a counted operation", COUNT_FIELDS)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"cost of {counter}", value, "must be a number of nanoseconds")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"cost of {counter}", value, "must be a finite number >= 0 (ns per operation)")
            checked[counter] = float(value)
        self.ns: dict[str, float] = checked
        self.name = name
        self.source = source

    @classmethod
    def from_toml(cls, path: str | Path) -> CostProfile:
        """Read a profile: optional top-level ``name`` and ``source`` strings and an ``[ns]`` table.

        ```toml
        name = "lab box, measured 2025-01"
        source = "bench/ndis_calls on Windows 11 24H2"
        [ns]
        pool_hits = 35
        sys_allocs = 180.5
        ```
        Unknown keys, unknown counter names, negative or non-numeric costs and unreadable files raise
        :class:`~ndis_replay.errors.ConfigError`.
        """
        path = Path(path)
        try:
            document: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError("cost profile", str(path), f"cannot be read: {exc.strerror or exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("cost profile", str(path), f"is not valid TOML: {exc}") from exc
        unknown = set(document) - {"name", "source", "ns"}
        if unknown:
            raise ConfigError("cost profile key", sorted(unknown)[0], "is not known", ("name", "source", "ns"))
        ns = document.get("ns", {})
        if not isinstance(ns, dict):
            raise ConfigError("cost profile [ns]", ns, "must be a table of counter = nanoseconds")
        name = document.get("name", path.stem)
        source = document.get("source", "")
        if not isinstance(name, str) or not isinstance(source, str):
            raise ConfigError("cost profile name/source", (name, source), "must be strings")
        return cls(ns, name=name, source=source)

    def cost(self, counts: OpCounters | Mapping[str, int]) -> float:
        """Modelled nanoseconds: Σ count × ns over the priced counters."""
        total = 0.0
        if isinstance(counts, OpCounters):
            for name, ns in self.ns.items():
                total += getattr(counts, name) * ns
        else:
            for name, ns in self.ns.items():
                total += counts.get(name, 0) * ns
        return total

    def __repr__(self) -> str:
        return f"CostProfile({self.name!r}, {self.ns})"
