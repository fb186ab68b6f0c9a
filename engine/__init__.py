"""The engine: the NDIS object model (:mod:`ndis_replay.engine.ndis`), the verifier
(:mod:`ndis_replay.engine.verifier`), the strategies (:mod:`ndis_replay.engine.strategies`), the miniports
(:mod:`ndis_replay.engine.miniports`), their configuration (:mod:`ndis_replay.engine.config`) and the replay loop
(:mod:`ndis_replay.engine.replay`).

The small face the replay loop and reports need: the runtime, the counters and cost profile, the verifier's
findings and rule table, and the bug-check exception the loop turns into a strategy failure.
"""

from __future__ import annotations

from ndis_replay.engine.ndis.counters import COUNT_DOCS, COUNT_FIELDS, CostProfile, OpCounters
from ndis_replay.engine.ndis.runtime import Handle, Ndis
from ndis_replay.engine.verifier import RULES, Finding, NdisBugCheck, OwnerState, Rule, Verifier

__all__ = [
    "COUNT_DOCS",
    "COUNT_FIELDS",
    "RULES",
    "CostProfile",
    "Finding",
    "Handle",
    "Ndis",
    "NdisBugCheck",
    "OpCounters",
    "OwnerState",
    "Rule",
    "Verifier",
]
