"""Stateful hypothesis tests of the NDIS pool model and the verifier (issue 8): random sequences of allocate / send /
complete / free / reinitialize / retreat / context / clone, and random misuse.

:class:`LegalMachine` drives two runtimes side by side — one checked (verifier on), one unchecked — with the same
legal driver program (NDIS_MODEL.md §2.1 pools, §2.2 reuse recipe and ownership, §2.4 retreat/advance, §2.5 clones
with caller-maintained parent links). Bundles hold descriptor *tokens*: ``owned`` (the driver holds it),
``outstanding`` (the miniport holds it), ``families`` / ``families_out`` (a parent kept while its clone is with the
driver / the miniport); each runtime maps a token to its own objects. After every step:

* no descriptor is both free and in use: live NBLs, NBs and MDLs are distinct objects, none sits on a pool's or the
  MDL lookaside's free list, none is quarantined (checked); the miniport holds exactly the outstanding NBLs;
* the counters balance: ``<kind>_outstanding`` equals the live descriptors reachable from the live NBLs, ``nbls_sent
  − nbls_completed`` the NBLs in flight, each pool's ``allocated`` its live NBLs, every ``<kind>_peak`` the highest
  outstanding value seen, and the checked and unchecked runtimes count exactly the same;
* the verifier agrees with the program: owner states (DRIVER/COMPLETED, STACK, FREED), ``in_flight``, and no finding
  but the RETREAT-ALLOC performance warning;
* quarantine holds: in checked mode (and for a NET_BUFFER_LIST_POOL_FLAG_VERIFY pool in either mode) no descriptor
  freed earlier is ever handed out again; an unchecked plain pool serves the block freed last (lookaside LIFO).

At teardown the program completes and frees everything: nothing is outstanding, ``mem_bytes`` is only the MDL
lookaside's cached blocks, and ``Verifier.finish`` finds nothing.

:class:`MisuseMachine` adds illegal operations to the checked runtime, chosen at random among the live descriptors:
each must record exactly the rule of NDIS_MODEL.md §4 (free while in flight and reinitialise while in flight →
OWN-AFTER-SEND, touch or reuse after free → UAF-QUARANTINE, send twice → LIST-LINKAGE bug check, complete what the
miniport does not hold → MINIPORT-AFTER-COMPLETE, free a parent before its clone → PARENT-FREED-WITH-CHILDREN), raise
nothing but the documented :class:`NdisBugCheck`, and leave the bookkeeping invariants above intact.

The native core exposes only whole strategies (``Engine.round``), not single DDK calls, so these sequences run on the
Python model only.

Randomness: not derandomized. Each run draws a fresh seed; a failure prints the shrunk program and a
``@reproduce_failure`` blob (``print_blob=True``), is saved in ``.hypothesis/`` and replayed first next time, and
``pytest --hypothesis-seed=N`` repeats a whole run.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)

from ndis_replay.engine.ndis import (
    Mdl,
    Ndis,
    NetBuffer,
    NetBufferList,
    NetBufferListPool,
    NetBufferListPoolParameters,
    NetBufferPool,
    NetBufferPoolParameters,
    advance_net_buffer_data_start,
    allocate_clone_net_buffer_list,
    allocate_memory_with_tag_priority,
    allocate_net_buffer,
    allocate_net_buffer_and_net_buffer_list,
    allocate_net_buffer_list,
    allocate_net_buffer_list_context,
    allocate_net_buffer_list_pool,
    allocate_net_buffer_mdl_and_data,
    allocate_net_buffer_pool,
    free_clone_net_buffer_list,
    free_memory,
    free_net_buffer,
    free_net_buffer_list,
    free_net_buffer_list_context,
    free_net_buffer_list_pool,
    free_net_buffer_pool,
    gather_net_buffer,
    link_child_net_buffer_list,
    locate_offset,
    m_send_net_buffer_lists_complete,
    ndis_allocate_mdl,
    ndis_free_mdl,
    retreat_net_buffer_data_start,
    send_net_buffer_lists,
    unlink_child_net_buffer_list,
)
from ndis_replay.engine.ndis import constants as k
from ndis_replay.engine.ndis.counters import KINDS
from ndis_replay.engine.ndis.structs import MDL_KIND_PREALLOCATED, MDL_KIND_RETREAT
from ndis_replay.engine.verifier import NdisBugCheck, OwnerState, Verifier

_oga = object.__getattribute__  # the tests' own inspection must not count as a driver's access
DATA_SIZE = 256  # DataSize of the "data" pool (bytes)
MEMORY = 4096  # nonpaged bytes each runtime's MDLs describe
#: pool kinds: "plain" (fAllocateNetBuffer, ContextSize 16), "verify" (NET_BUFFER_LIST_POOL_FLAG_VERIFY), "data"
#: (DataSize: NB + MDL + data preallocated), "bare" (no NB: a standalone NdisAllocateNetBuffer NB is chained)
POOLS = ("plain", "verify", "data", "bare")
WARNINGS = {"RETREAT-ALLOC"}


@dataclass(frozen=True)
class Layout:
    """Where an NB's used data lies: ``backfill`` unused bytes, then ``length`` used bytes (0: no MDL chain), the
    whole split into MDLs at ``cuts`` (offsets from the chain's start)."""

    backfill: int
    length: int
    cuts: tuple[int, ...]


layouts = st.builds(
    Layout,
    backfill=st.integers(0, 64),
    length=st.integers(0, 300),
    cuts=st.lists(st.integers(1, 363), max_size=2).map(lambda c: tuple(sorted(set(c)))),
)


@dataclass
class Desc:
    """The program's view of one NBL token, shared by both runtimes: its pool, the ContextSize of its allocate
    call, the sizes pushed with NdisAllocateNetBufferListContext (LIFO) and the bytes retreated (not advanced)."""

    pool: str
    call_context: int
    contexts: list[int] = field(default_factory=list)
    retreat: int = 0
    clone_flags: int | None = None  # set for a clone


@dataclass
class Family:
    """A parent kept by the driver and its clone (ParentNetBufferList / ChildRefCount linked by the caller).
    ``orphan``: the parent was freed first (misuse), its MDLs wait for the clone."""

    parent: int
    child: int
    flags: int
    orphan: bool = False


@dataclass
class Slot:
    """One token's objects in one runtime: the NBL, its NB, the MDLs the driver allocated for it (NdisAllocateMdl;
    the NBL does not own them) and, for a "bare" pool, the standalone NB."""

    nbl: NetBufferList
    nb: NetBuffer | None
    mdls: list[Mdl] = field(default_factory=list)
    standalone: bool = False


def _chain(nb: NetBuffer | None) -> list[NetBuffer]:
    out: list[NetBuffer] = []
    while nb is not None:
        out.append(nb)
        nb = _oga(nb, "next")
    return out


def _mdls(nb: NetBuffer) -> list[Mdl]:
    out: list[Mdl] = []
    mdl: Mdl | None = _oga(nb, "mdl_chain")
    while mdl is not None:
        out.append(mdl)
        mdl = _oga(mdl, "next")
    return out


class World:
    """One runtime with a deferred miniport, the four pools, an NB pool and nonpaged memory; ``slots`` maps tokens
    to objects. ``graveyard`` keeps every freed descriptor alive, so identity checks against it are sound."""

    def __init__(self, checked: bool) -> None:
        self.ndis = ndis = Ndis(checked=checked, max_findings_per_rule=1_000_000)
        self.checked = checked
        self.pending: dict[int, NetBufferList] = {}  # what the miniport holds, by id
        self.wire = 0  # NBs gathered by the miniport
        self.completed: list[NetBufferList] = []  # what the last completion delivered
        ndis.register_miniport(send_net_buffer_lists_handler=self._miniport_send)
        ndis.register_protocol(send_net_buffer_lists_complete_handler=self._protocol_complete)
        self.pools: dict[str, NetBufferListPool] = {}
        for name, params in (
            ("plain", NetBufferListPoolParameters(16, True, name="plain")),
            ("verify", NetBufferListPoolParameters(0, True, flags=k.NET_BUFFER_LIST_POOL_FLAG_VERIFY, name="verify")),
            ("data", NetBufferListPoolParameters(0, True, DATA_SIZE, name="data")),
            ("bare", NetBufferListPoolParameters(0, False, name="bare")),
        ):
            pool = allocate_net_buffer_list_pool(ndis, params)
            assert pool is not None
            self.pools[name] = pool
        nb_pool = allocate_net_buffer_pool(ndis, NetBufferPoolParameters(name="nb"))
        assert nb_pool is not None
        self.nb_pool: NetBufferPool = nb_pool
        self.memory = allocate_memory_with_tag_priority(ndis, MEMORY)
        self.slots: dict[int, Slot] = {}
        self.graveyard: list[object] = []
        self.peaks: dict[str, int] = dict.fromkeys(KINDS, 0)

    @property
    def v(self) -> Verifier:
        assert self.ndis.verifier is not None
        return self.ndis.verifier

    # --- the miniport and the protocol's completion handler ------------------------------------------------------

    def _miniport_send(self, chain: NetBufferList) -> None:
        nbl: NetBufferList | None = chain
        while nbl is not None:
            nb = nbl.first_net_buffer
            while nb is not None:
                gather_net_buffer(nb)  # DMA reads what the NB describes
                self.wire += 1
                nb = nb.next
            self.pending[id(nbl)] = nbl
            nbl = nbl.next

    def _protocol_complete(self, chain: NetBufferList) -> None:
        nbl: NetBufferList | None = chain
        while nbl is not None:  # reset checklist step 1: save Next, then clear it
            following = nbl.next
            nbl.next = None
            self.completed.append(nbl)
            nbl = following

    def complete(self, tokens: list[int]) -> None:
        """The miniport completes ``tokens`` in one chain (any order is legal), Status written first."""
        nbls = [self.slots[t].nbl for t in tokens]
        self.completed = []
        with self.ndis.acting_as(self.ndis.miniport_adapter_handle):
            for first, second in itertools.pairwise(nbls):
                first.next = second
            nbls[-1].next = None
            for nbl in nbls:
                nbl.status = k.NDIS_STATUS_SUCCESS
                del self.pending[id(nbl)]
            m_send_net_buffer_lists_complete(self.ndis, nbls[0])
        assert [id(n) for n in self.completed] == [id(n) for n in nbls]

    # --- driver operations -------------------------------------------------------------------------------------

    def _describe(self, layout: Layout) -> list[Mdl]:
        """NdisAllocateMdl over [0, backfill + length) of the memory, split at the cuts."""
        if not layout.length:
            return []
        end = layout.backfill + layout.length
        points = [0, *(c for c in layout.cuts if c < end), end]
        mdls = [ndis_allocate_mdl(self.ndis, self.memory[a:b]) for a, b in itertools.pairwise(points)]
        for first, second in itertools.pairwise(mdls):
            first.next = second
        return mdls

    def _point(self, nb: NetBuffer, mdls: list[Mdl], layout: Layout) -> None:
        """Reset checklist step 5: MdlChain, DataOffset, DataLength, CurrentMdl, CurrentMdlOffset consistent."""
        head = mdls[0] if mdls else None
        nb.mdl_chain = head
        nb.data_offset = layout.backfill if mdls else 0
        nb.data_length = layout.length
        nb.current_mdl, nb.current_mdl_offset = locate_offset(head, nb.data_offset)

    def allocate(self, token: int, desc: Desc, layout: Layout) -> None:
        ndis = self.ndis
        pool = self.pools[desc.pool]
        top = pool.free_list[-1] if pool.free_list else None
        if desc.pool == "data":
            nbl = allocate_net_buffer_list(ndis, pool, desc.call_context)
            slot = Slot(nbl, nbl.first_net_buffer)
        elif desc.pool == "bare":
            nbl = allocate_net_buffer_list(ndis, pool, desc.call_context)
            mdls = self._describe(layout)
            offset = layout.backfill if mdls else 0
            nb = allocate_net_buffer(ndis, self.nb_pool, mdls[0] if mdls else None, offset, layout.length)
            nbl.first_net_buffer = nb
            slot = Slot(nbl, nb, mdls, standalone=True)
        else:
            mdls = self._describe(layout)
            offset = layout.backfill if mdls else 0
            nbl = allocate_net_buffer_and_net_buffer_list(
                ndis, pool, desc.call_context, 0, mdls[0] if mdls else None, offset, layout.length
            )
            slot = Slot(nbl, nbl.first_net_buffer, mdls)
        nbl.source_handle = ndis.binding_handle  # must be set for every send (§2.2)
        self.slots[token] = slot
        blocks = {id(nbl), *(id(nb) for nb in _chain(_oga(nbl, "first_net_buffer")))}
        mdls = {id(m) for nb in _chain(_oga(nbl, "first_net_buffer")) for m in _mdls(nb)}
        dead = {id(o) for o in self.graveyard}
        if self.checked:  # quarantine: nothing freed comes back
            assert not (blocks | mdls) & dead, "a quarantined descriptor was handed out again"
        elif desc.pool == "verify":  # NET_BUFFER_LIST_POOL_FLAG_VERIFY: the pool never reuses its blocks
            assert not blocks & dead, "a verify pool reused a freed NBL"
        elif top is not None:  # an unchecked lookaside serves the block freed last
            assert nbl is top

    def add_context(self, token: int, size: int) -> None:
        status = allocate_net_buffer_list_context(self.ndis, self.slots[token].nbl, size)
        assert status == k.NDIS_STATUS_SUCCESS

    def pop_context(self, token: int, size: int) -> None:
        free_net_buffer_list_context(self.ndis, self.slots[token].nbl, size)

    def retreat(self, token: int, delta: int, back_fill: int) -> None:
        nb = self.slots[token].nb
        assert nb is not None
        assert retreat_net_buffer_data_start(self.ndis, nb, delta, back_fill) == k.NDIS_STATUS_SUCCESS

    def unretreat(self, token: int, delta: int) -> None:
        """Reset checklist step 4: one advance by everything retreated, FreeMdl=TRUE frees NDIS's MDLs."""
        nb = self.slots[token].nb
        assert nb is not None
        advance_net_buffer_data_start(self.ndis, nb, delta, True)

    def reinitialize(self, token: int, desc: Desc, layout: Layout) -> None:
        """The §2.2 reuse recipe on an NBL the driver holds (steps 1, 2, 4, 3, 5, 6; 8 stays set)."""
        slot = self.slots[token]
        nbl, nb = slot.nbl, slot.nb
        assert nb is not None
        nbl.next = None
        _ = nbl.status  # valid now: never sent, or completed
        if desc.retreat:
            self.unretreat(token, desc.retreat)
        if desc.pool == "data":  # the preallocated MDL stays; only the used range moves inside it
            mdl = nb.mdl_chain
            assert mdl is not None
            offset = min(layout.backfill, DATA_SIZE)
            nb.data_offset = offset
            nb.data_length = min(layout.length, DATA_SIZE - offset)
            nb.current_mdl, nb.current_mdl_offset = locate_offset(mdl, offset)
        else:
            for mdl in slot.mdls:
                ndis_free_mdl(self.ndis, mdl)
            self.graveyard.extend(slot.mdls)
            slot.mdls = self._describe(layout)
            self._point(nb, slot.mdls, layout)
        info = nbl.net_buffer_list_info
        info[k.TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO] = None
        info[k.TCP_LARGE_SEND_NET_BUFFER_LIST_INFO] = None
        nbl.status = k.NDIS_STATUS_SUCCESS

    def send(self, tokens: list[int]) -> None:
        nbls = [self.slots[t].nbl for t in tokens]
        for first, second in itertools.pairwise(nbls):
            first.next = second
        nbls[-1].next = None
        send_net_buffer_lists(self.ndis, self.ndis.binding_handle, nbls[0])

    def release(self, token: int, desc: Desc, *, keep_mdls: bool = False) -> NetBufferList:
        """Undo contexts (LIFO) and retreats, detach a standalone NB and free it first (NB-BEFORE-NBL), clear the NB
        (XDP step 9), NdisFreeNetBufferList, then the driver's MDLs (unless ``keep_mdls``)."""
        slot = self.slots[token]
        nbl, nb = slot.nbl, slot.nb
        for size in reversed(desc.contexts):
            free_net_buffer_list_context(self.ndis, nbl, size)
        if desc.retreat:
            self.unretreat(token, desc.retreat)
        if slot.standalone:
            assert nb is not None
            nbl.first_net_buffer = None
            nb.mdl_chain = nb.current_mdl = None
            nb.data_offset = nb.data_length = nb.current_mdl_offset = 0
            free_net_buffer(self.ndis, nb)
            self.graveyard.append(nb)
        elif nb is not None and desc.pool != "data":
            nb.mdl_chain = nb.current_mdl = None
            nb.data_offset = nb.data_length = nb.current_mdl_offset = 0
        free_net_buffer_list(self.ndis, nbl)
        self.graveyard.append(nbl)
        if nb is not None and not slot.standalone:
            self.graveyard.append(nb)
            if desc.pool == "data":
                self.graveyard.append(_oga(nb, "_mdl"))  # preallocated: freed with the NBL
        if not keep_mdls:
            self.free_mdls(slot)
        return nbl

    def free_mdls(self, slot: Slot) -> None:
        for mdl in slot.mdls:
            ndis_free_mdl(self.ndis, mdl)
        self.graveyard.extend(slot.mdls)
        slot.mdls = []

    def clone(self, parent: int, child: int, flags: int) -> None:
        ndis = self.ndis
        source = self.slots[parent].nbl
        clone = allocate_clone_net_buffer_list(ndis, source, None, None, flags)
        assert clone is not None
        link_child_net_buffer_list(ndis, clone, source)
        clone.source_handle = ndis.binding_handle
        self.slots[child] = Slot(clone, clone.first_net_buffer)
        if self.checked:
            fresh = {id(clone), *(id(nb) for nb in _chain(_oga(clone, "first_net_buffer")))}
            assert not fresh & {id(o) for o in self.graveyard}, "a quarantined descriptor was handed out again"

    def free_clone(self, family: Family) -> NetBufferList | None:
        ndis = self.ndis
        child = self.slots[family.child].nbl
        child.next = None
        parent = unlink_child_net_buffer_list(ndis, child)
        nbs = _chain(_oga(child, "first_net_buffer"))
        mdls = [] if family.flags & k.NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS else [m for nb in nbs for m in _mdls(nb)]
        free_clone_net_buffer_list(ndis, child, family.flags)
        self.graveyard.extend([child, *nbs, *mdls])
        return parent

    def teardown(self) -> None:
        ndis = self.ndis
        free_memory(ndis, self.memory)
        for pool in self.pools.values():
            free_net_buffer_list_pool(ndis, pool)
        free_net_buffer_pool(ndis, self.nb_pool)


class LegalMachine(RuleBasedStateMachine):
    """Legal NDIS 6 driver programs on a checked and an unchecked runtime at once (see the module docstring)."""

    MODES: tuple[bool, ...] = (True, False)

    owned = Bundle("owned")
    outstanding = Bundle("outstanding")
    families = Bundle("families")
    families_out = Bundle("families_out")

    def __init__(self) -> None:
        super().__init__()
        self.worlds = [World(checked) for checked in self.MODES]
        self.desc: dict[int, Desc] = {}
        #: token → "owned", "out", "freed", "parent", "child", "child_out"
        self.state: dict[int, str] = {}
        self.family_of: dict[int, Family] = {}  # child token → family
        self.tokens = itertools.count()
        self.step = 0
        self.expect: str | None = None  # the rule the current misuse step must record
        self.seen_counts: dict[str, int] = {}

    # --- legal rules ----------------------------------------------------------------------------------------------

    @rule(
        target=owned,
        pool=st.sampled_from(POOLS),
        call_context=st.sampled_from([0, 16, 32]),
        layout=layouts,
    )
    def allocate(self, pool: str, call_context: int, layout: Layout) -> int:
        token = next(self.tokens)
        self.desc[token] = desc = Desc(pool, call_context)
        self.state[token] = "owned"
        for w in self.worlds:
            w.allocate(token, desc, layout)
        return token

    @rule(token=owned, size=st.sampled_from([8, 16, 24]))
    def add_context(self, token: int, size: int) -> None:
        self.desc[token].contexts.append(size)
        for w in self.worlds:
            w.add_context(token, size)

    @rule(token=owned)
    def pop_context(self, token: int) -> None:
        contexts = self.desc[token].contexts
        if contexts:
            size = contexts.pop()
            for w in self.worlds:
                w.pop_context(token, size)

    @rule(token=owned, delta=st.integers(1, 48), back_fill=st.sampled_from([0, 8]))
    def retreat(self, token: int, delta: int, back_fill: int) -> None:
        self.desc[token].retreat += delta
        for w in self.worlds:
            w.retreat(token, delta, back_fill)

    @rule(token=owned)
    def unretreat(self, token: int) -> None:
        desc = self.desc[token]
        if desc.retreat:
            for w in self.worlds:
                w.unretreat(token, desc.retreat)
            desc.retreat = 0

    @rule(token=owned, layout=layouts)
    def reinitialize(self, token: int, layout: Layout) -> None:
        desc = self.desc[token]
        for w in self.worlds:
            w.reinitialize(token, desc, layout)
        desc.retreat = 0

    @rule(target=outstanding, token=consumes(owned))
    def send(self, token: int) -> int:
        self.state[token] = "out"
        for w in self.worlds:
            w.send([token])
        return token

    @precondition(lambda self: len(self.bundle("owned")) >= 2)
    @rule(target=outstanding, first=consumes(owned), second=consumes(owned))
    def send_two(self, first: int, second: int) -> Any:
        self.state[first] = self.state[second] = "out"
        for w in self.worlds:
            w.send([first, second])
        return multiple(first, second)

    @rule(target=owned, token=consumes(outstanding))
    def complete(self, token: int) -> int:
        self.state[token] = "owned"
        for w in self.worlds:
            w.complete([token])
        return token

    @precondition(lambda self: len(self.bundle("outstanding")) >= 2)
    @rule(target=owned, first=consumes(outstanding), second=consumes(outstanding))
    def complete_two(self, first: int, second: int) -> Any:
        self.state[first] = self.state[second] = "owned"
        for w in self.worlds:
            w.complete([second, first])  # completion order need not be submission order
        return multiple(first, second)

    @rule(token=consumes(owned))
    def free(self, token: int) -> None:
        desc = self.desc[token]
        for w in self.worlds:
            w.release(token, desc)
        desc.contexts.clear()
        desc.retreat = 0
        self.state[token] = "freed"

    @rule(target=families, token=consumes(owned), flags=st.sampled_from([0, k.NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS]))
    def clone(self, token: int, flags: int) -> Family:
        child = next(self.tokens)
        self.desc[child] = Desc("clone", 0, clone_flags=flags)
        family = Family(token, child, flags)
        self.family_of[child] = family
        self.state[token] = "parent"
        self.state[child] = "child"
        for w in self.worlds:
            w.clone(token, child, flags)
        return family

    @rule(target=families_out, family=consumes(families))
    def send_clone(self, family: Family) -> Family:
        self.state[family.child] = "child_out"
        for w in self.worlds:
            w.send([family.child])
        return family

    @rule(target=families, family=consumes(families_out))
    def complete_clone(self, family: Family) -> Family:
        self.state[family.child] = "child"
        for w in self.worlds:
            w.complete([family.child])
        return family

    @rule(target=owned, family=consumes(families))
    def free_clone(self, family: Family) -> Any:
        self.state[family.child] = "freed"
        del self.family_of[family.child]
        for w in self.worlds:
            parent = w.free_clone(family)
            if family.orphan:
                w.free_mdls(w.slots[family.parent])  # the freed parent's MDLs, kept for the clone until now
            else:
                assert parent is w.slots[family.parent].nbl  # its ChildRefCount reached 0
        if family.orphan:
            return multiple()
        self.state[family.parent] = "owned"
        return family.parent

    # --- invariants ------------------------------------------------------------------------------------------------

    def live(self) -> list[int]:
        return [t for t, s in self.state.items() if s != "freed"]

    @invariant()
    def descriptors_are_free_or_in_use_never_both(self) -> None:
        for w in self.worlds:
            live_nbls = [w.slots[t].nbl for t in self.live()]
            nbs = {id(nb): nb for nbl in live_nbls for nb in _chain(_oga(nbl, "first_net_buffer"))}
            mdls = {id(m): m for nb in nbs.values() for m in _mdls(nb)}
            assert len({id(n) for n in live_nbls}) == len(live_nbls), "one NBL behind two live tokens"
            cached: set[int] = {id(o) for pool in w.pools.values() for o in pool.free_list}
            cached |= {id(o) for o in w.ndis.internal_nbl_pool.free_list}
            cached |= {id(o) for o in w.nb_pool.free_list} | {id(o) for o in w.ndis.internal_nb_pool.free_list}
            cached |= {id(o) for o in w.ndis.mdl_lookaside}
            in_use = {id(n) for n in live_nbls} | nbs.keys() | mdls.keys()
            assert not in_use & cached, "a descriptor in use is also on a free list"
            out = {t for t, s in self.state.items() if s in ("out", "child_out")}
            assert set(w.pending) == {id(w.slots[t].nbl) for t in out}
            if w.checked:
                assert not in_use & {id(o) for o in w.graveyard}, "a quarantined descriptor is in use"
                assert not any(w.v.is_freed(o) for o in [*live_nbls, *nbs.values(), *mdls.values()])
                assert all(w.v.is_freed(o) for o in w.graveyard)

    @invariant()
    def counters_balance(self) -> None:
        for w in self.worlds:
            c = w.ndis.counters
            live = self.live()
            nbls = [w.slots[t].nbl for t in live]
            nbs = {id(nb): nb for nbl in nbls for nb in _chain(_oga(nbl, "first_net_buffer"))}
            mdls = {id(m): m for nb in nbs.values() for m in _mdls(nb)}
            assert c.nbl_outstanding == len(nbls)
            assert c.nb_outstanding == len(nbs)
            assert c.mdl_outstanding == len(mdls)
            contexts = sum((1 if self.desc[t].call_context else 0) + len(self.desc[t].contexts) for t in live)
            assert c.ctx_outstanding == contexts
            data = sum(1 for m in mdls.values() if _oga(m, "_kind") in (MDL_KIND_PREALLOCATED, MDL_KIND_RETREAT))
            assert c.data_outstanding == data + 1  # + the world's NdisAllocateMemoryWithTagPriority buffer
            out = sum(1 for s in self.state.values() if s in ("out", "child_out"))
            assert c.nbls_sent - c.nbls_completed == out
            for name, pool in w.pools.items():
                assert pool.allocated == sum(1 for t in live if self.desc[t].pool == name), name
            assert w.ndis.internal_nbl_pool.allocated == sum(1 for t in live if self.desc[t].pool == "clone")
            for kind in ("nbl", "nb", "mdl", "ctx", "data"):
                now = getattr(c, f"{kind}_outstanding")
                w.peaks[kind] = max(w.peaks[kind], now)
                assert getattr(c, f"{kind}_peak") == w.peaks[kind], kind
            assert 0 <= c.mem_bytes <= c.mem_peak
        if len(self.worlds) == 2:  # counts do not depend on the mode
            assert self.worlds[0].ndis.counters.snapshot() == self.worlds[1].ndis.counters.snapshot()

    @invariant()
    def verifier_agrees(self) -> None:
        for w in self.worlds:
            if not w.checked:
                continue
            v = w.v
            for token, state in self.state.items():
                nbl = w.slots[token].nbl
                expected = {
                    "owned": {OwnerState.DRIVER, OwnerState.COMPLETED},
                    "parent": {OwnerState.DRIVER, OwnerState.COMPLETED},
                    "child": {OwnerState.DRIVER, OwnerState.COMPLETED},
                    "out": {OwnerState.STACK},
                    "child_out": {OwnerState.STACK},
                    "freed": {OwnerState.FREED},
                }[state]
                assert v.state_of(nbl) in expected, (token, state, v.state_of(nbl))
            assert set(v.in_flight) == set(w.pending)
            counts = {rule: n for rule, n in v.counts.items() if rule not in WARNINGS}
            new = {rule for rule, n in counts.items() if n > self.seen_counts.get(rule, 0)}
            assert new == ({self.expect} if self.expect else set()), (self.expect, v.findings[-5:])
            if self.expect:
                assert counts[self.expect] == self.seen_counts.get(self.expect, 0) + 1
            self.seen_counts = counts
            v.packet_index = self.step  # a fresh index per step: findings are deduplicated per packet
        self.expect = None
        self.step += 1

    def teardown(self) -> None:
        """Complete and free everything legally: nothing outstanding, no memory but the MDL lookaside, no finding.

        Skipped when a step already failed (hypothesis calls teardown from a ``finally``): the step's error is the
        one to report, not the consequences of cleaning up after it."""
        if sys.exc_info()[0] is not None:
            return
        out = [t for t, s in self.state.items() if s in ("out", "child_out")]
        for token in out:
            for w in self.worlds:
                w.complete([token])
            self.state[token] = "child" if token in self.family_of else "owned"
        for family in list(self.family_of.values()):
            self.free_clone(family)
        for token in [t for t, s in self.state.items() if s == "owned"]:
            self.free(token)
        for w in self.worlds:
            w.teardown()
            c = w.ndis.counters
            for kind in KINDS:
                assert getattr(c, f"{kind}_outstanding") == 0, kind
            assert c.nbls_sent == c.nbls_completed
            # what stays cached: the MDL lookaside and NDIS's own pools for derived NBLs (never freed)
            internal = w.ndis.internal_nbl_pool, w.ndis.internal_nb_pool
            cached = sum(len(pool.free_list) * pool.block_size for pool in internal)
            assert c.mem_bytes == len(w.ndis.mdl_lookaside) * k.MDL_FIXED_BLOCK_SIZE + cached
            if w.checked:
                w.v.packet_index = self.step
                w.v.finish()
                new = {r for r, n in w.v.counts.items() if r not in WARNINGS and n > self.seen_counts.get(r, 0)}
                assert not new, w.v.findings[-5:]
        if len(self.worlds) == 2:
            assert self.worlds[0].ndis.counters.snapshot() == self.worlds[1].ndis.counters.snapshot()


class MisuseMachine(LegalMachine):
    """The legal program plus random misuse on a checked runtime: each mistake records exactly its rule."""

    MODES = (True,)

    @property
    def w(self) -> World:
        return self.worlds[0]

    def _pick(self, data: st.DataObject, states: tuple[str, ...]) -> int | None:
        tokens = sorted(t for t, s in self.state.items() if s in states)
        return data.draw(st.sampled_from(tokens), label="token") if tokens else None

    @rule(data=st.data())
    def misuse_free_while_outstanding(self, data: st.DataObject) -> None:
        token = self._pick(data, ("out", "child_out"))
        if token is not None:
            self.expect = "OWN-AFTER-SEND"
            free_net_buffer_list(self.w.ndis, self.w.slots[token].nbl)

    @rule(data=st.data(), how=st.sampled_from(["write field", "retreat", "advance", "oob slot", "mdl next"]))
    def misuse_reinitialize_while_outstanding(self, data: st.DataObject, how: str) -> None:
        token = self._pick(data, ("out", "child_out"))
        if token is None:
            return
        slot = self.w.slots[token]
        nb = slot.nb
        assert nb is not None
        self.expect = "OWN-AFTER-SEND"
        ndis = self.w.ndis
        if how == "write field":
            nb.data_length = _oga(nb, "data_length")  # even an unchanged value: the driver does not own it
        elif how == "retreat":
            assert retreat_net_buffer_data_start(ndis, nb, 8) == k.NDIS_STATUS_FAILURE
        elif how == "advance":
            advance_net_buffer_data_start(ndis, nb, 0, True)
        elif how == "oob slot":
            info = _oga(slot.nbl, "net_buffer_list_info")
            info[k.TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO] = None
        else:
            mdls = _mdls(nb)
            if not mdls:
                self.expect = None
                return
            mdls[-1].next = None  # the MDL is referenced by an NBL in flight

    @rule(data=st.data(), how=st.sampled_from(["read", "write", "double free", "send", "retreat", "mdl"]))
    def misuse_use_after_free(self, data: st.DataObject, how: str) -> None:
        token = self._pick(data, ("freed",))
        if token is None:
            return
        slot = self.w.slots[token]
        nbl, ndis = slot.nbl, self.w.ndis
        self.expect = "UAF-QUARANTINE"
        if how == "read":
            _ = nbl.first_net_buffer
        elif how == "write":
            nbl.status = k.NDIS_STATUS_SUCCESS
        elif how == "double free":
            if self.desc[token].clone_flags is not None:
                free_clone_net_buffer_list(ndis, nbl, self.desc[token].clone_flags)
            else:
                free_net_buffer_list(ndis, nbl)
        elif how == "send":
            with pytest.raises(NdisBugCheck) as stop:
                send_net_buffer_lists(ndis, ndis.binding_handle, nbl)
            assert stop.value.finding.rule == "UAF-QUARANTINE"
        elif how == "retreat":
            nb = slot.nb
            if nb is None:
                self.expect = None
                return
            assert retreat_net_buffer_data_start(ndis, nb, 8) == k.NDIS_STATUS_FAILURE
        else:
            freed = [m for m in self.w.graveyard if isinstance(m, Mdl)]
            if not freed:
                self.expect = None
                return
            _ = data.draw(st.sampled_from(freed), label="mdl").byte_count

    @rule(data=st.data())
    def misuse_send_twice(self, data: st.DataObject) -> None:
        token = self._pick(data, ("out", "child_out"))
        if token is None:
            return
        ndis = self.w.ndis
        self.expect = "LIST-LINKAGE"
        with pytest.raises(NdisBugCheck) as stop:
            send_net_buffer_lists(ndis, ndis.binding_handle, self.w.slots[token].nbl)
        assert stop.value.finding.rule == "LIST-LINKAGE"

    @rule(data=st.data())
    def misuse_complete_not_sent(self, data: st.DataObject) -> None:
        token = self._pick(data, ("owned", "parent", "child", "freed"))
        if token is None:
            return
        ndis = self.w.ndis
        self.expect = "MINIPORT-AFTER-COMPLETE"
        self.w.completed = []
        with ndis.acting_as(ndis.miniport_adapter_handle):
            m_send_net_buffer_lists_complete(ndis, self.w.slots[token].nbl)
        assert self.w.completed == []  # nothing reached the protocol

    @rule(data=st.data())
    def misuse_free_parent_before_clone(self, data: st.DataObject) -> None:
        candidates = sorted(
            (f.parent, f.child)
            for f in self.family_of.values()
            # with USE_ORIGINAL_MDLS the clone shares the parent's chain: a retreat MDL or a DataSize pool's MDL of the
            # parent goes with the parent, and the clone would describe freed memory; those are other mistakes
            if not f.orphan and not (f.flags and (self.desc[f.parent].retreat or self.desc[f.parent].pool == "data"))
        )
        if not candidates:
            return
        parent, child = data.draw(st.sampled_from(candidates), label="family")
        family = self.family_of[child]
        desc = self.desc[parent]
        self.expect = "PARENT-FREED-WITH-CHILDREN"
        # the clone may still use the parent's MDLs (NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS): keep them for it
        self.w.release(parent, desc, keep_mdls=bool(family.flags))
        desc.contexts.clear()
        desc.retreat = 0
        family.orphan = True
        self.state[parent] = "freed"


# ~50 ms per 50-step program for both runtimes (2-core box): 150 programs each keep the file near 15 s
_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TestLegalSequences = LegalMachine.TestCase
TestLegalSequences.settings = _SETTINGS
TestMisuse = MisuseMachine.TestCase
TestMisuse.settings = _SETTINGS


# --- regressions for the model bugs these machines found (both fixed in engine/verifier.py) ---------------------


@pytest.mark.parametrize("own_retreat", [False, True], ids=["parent-retreated", "clone-retreated"])
def test_clone_with_original_mdls_owns_only_its_own_retreat(own_retreat: bool) -> None:
    """A clone with USE_ORIGINAL_MDLS shares its retreated parent's chain: freeing the clone leaks nothing (the
    parent still owns NDIS's header MDL and advances it away later); a retreat of the clone itself does leak."""
    ndis = Ndis(checked=True)
    pool = allocate_net_buffer_list_pool(ndis, NetBufferListPoolParameters(0, True, name="p"))
    assert pool is not None
    memory = allocate_memory_with_tag_priority(ndis, 100)
    mdl = ndis_allocate_mdl(ndis, memory[:60])
    parent = allocate_net_buffer_and_net_buffer_list(ndis, pool, 0, 0, mdl, 0, 60)
    flags = k.NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS
    nb = parent.first_net_buffer
    assert nb is not None
    assert retreat_net_buffer_data_start(ndis, nb, 14) == k.NDIS_STATUS_SUCCESS  # no backfill: NDIS allocates
    clone = allocate_clone_net_buffer_list(ndis, parent, None, None, flags)
    assert clone is not None and clone.first_net_buffer is not None
    if own_retreat:
        assert retreat_net_buffer_data_start(ndis, clone.first_net_buffer, 8) == k.NDIS_STATUS_SUCCESS
    free_clone_net_buffer_list(ndis, clone, flags)
    assert ndis.verifier is not None
    leaks = [f for f in ndis.verifier.findings if f.rule == "RETREAT-LEAK"]
    assert len(leaks) == own_retreat, leaks


@pytest.mark.parametrize("how", ["NdisFreeNetBufferList", "NdisFreeNetBuffer"])
def test_preallocated_mdl_is_quarantined_with_its_descriptor(how: str) -> None:
    """The MDL (and data) a DataSize pool preallocates go back with the NBL / NB: touching it afterwards is
    UAF-QUARANTINE like touching the NBL or NB."""
    ndis = Ndis(checked=True)
    if how == "NdisFreeNetBufferList":
        pool = allocate_net_buffer_list_pool(ndis, NetBufferListPoolParameters(0, True, DATA_SIZE, name="data"))
        assert pool is not None
        nbl = allocate_net_buffer_list(ndis, pool)
        mdl = nbl.first_net_buffer.mdl_chain  # type: ignore[union-attr]
        free_net_buffer_list(ndis, nbl)
    else:
        nb_pool = allocate_net_buffer_pool(ndis, NetBufferPoolParameters(DATA_SIZE, name="data"))
        assert nb_pool is not None
        nb = allocate_net_buffer_mdl_and_data(ndis, nb_pool)
        mdl = nb.mdl_chain
        free_net_buffer(ndis, nb)
    assert mdl is not None
    _ = mdl.byte_count
    assert ndis.verifier is not None
    assert [f.rule for f in ndis.verifier.findings] == ["UAF-QUARANTINE"]
