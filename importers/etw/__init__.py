"""ETW input: the binary .etl container (:mod:`.container`), its synthetic writer (:mod:`.writer`) and the
:class:`EventBatch` columns between the container and the provider decoders (:mod:`.events`)."""

from __future__ import annotations

from ndis_replay.importers.etw.container import (
    ETL_SNIFF_BYTES,
    EtlReader,
    EtlStats,
    LogfileHeader,
    looks_like_etl,
)
from ndis_replay.importers.etw.events import EventBatch
from ndis_replay.importers.etw.writer import EtlWriter, lz77_literal_compress

__all__ = [
    "ETL_SNIFF_BYTES",
    "EtlReader",
    "EtlStats",
    "EtlWriter",
    "EventBatch",
    "LogfileHeader",
    "looks_like_etl",
    "lz77_literal_compress",
]
