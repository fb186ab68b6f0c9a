"""The one format between the ETL container reader and the provider decoders: :class:`EventBatch`.

The container reader (:mod:`ndis_replay.importers.etw.container`) walks buffers and records; every
EVENT_HEADER record of a run of buffers becomes one row of numpy columns over the buffers' decompressed bytes,
so a decoder selects its provider's events with a mask and gathers their fields with fancy indexing instead of
a Python loop per event (the same design as the pcap reader). Batches come in file order, which is not time
order (buffers are per CPU): decoders sort what they keep by ``(ts_ns, record)``.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

import numpy as np

#: EVENT_HEADER.Flags bits (ETW_FORMAT.md §2.3).
FLAG_EXTENDED_INFO = 0x0001
FLAG_STRING_ONLY = 0x0004
FLAG_TRACE_MESSAGE = 0x0008
FLAG_32_BIT_HEADER = 0x0020
FLAG_64_BIT_HEADER = 0x0040

#: Extended data item types used here.
EXT_EVENT_SCHEMA_TL = 0x000B
EXT_PROV_TRAITS = 0x000C


def guid_key(guid: uuid.UUID) -> tuple[int, int]:
    """The two little-endian u64 halves of ``guid`` as stored in an EVENT_HEADER (Windows byte order), for
    comparison with :attr:`EventBatch.guid_lo` / :attr:`EventBatch.guid_hi`."""
    lo, hi = struct.unpack("<QQ", guid.bytes_le)
    return lo, hi


@dataclass
class EventBatch:
    """EVENT_HEADER records of consecutive buffers, as columns over ``buf``.

    Row ``i`` is the record ``buf[offset[i] : offset[i] + size[i]]``; its UserData is
    ``buf[user_offset[i] : user_offset[i] + user_len[i]]``. ``buf`` is immutable and never reused, so a trace's
    ``data`` column may point into it.
    """

    buf: bytes
    record: np.ndarray  # int64: sequence number of the record in the file (all record kinds counted), for ties
    cpu: np.ndarray  # uint16: ProcessorNumber of the record's buffer
    offset: np.ndarray  # int64: start of the record in buf
    size: np.ndarray  # int64: the record's Size field
    flags: np.ndarray  # uint16: EVENT_HEADER.Flags
    thread_id: np.ndarray  # uint32
    process_id: np.ndarray  # uint32
    raw_ts: np.ndarray  # int64: TimeStamp in the file's clock units
    ts_ns: np.ndarray  # int64: TimeStamp converted to ns since the Unix epoch (ETW_FORMAT.md §2.5)
    guid_lo: np.ndarray  # uint64: ProviderId bytes 0-7 as stored (see guid_key)
    guid_hi: np.ndarray  # uint64: ProviderId bytes 8-15 as stored
    event_id: np.ndarray  # uint16
    version: np.ndarray  # uint8
    channel: np.ndarray  # uint8
    level: np.ndarray  # uint8
    opcode: np.ndarray  # uint8
    task: np.ndarray  # uint16
    keyword: np.ndarray  # uint64
    user_offset: np.ndarray  # int64: start of UserData in buf (after the extended items)
    user_len: np.ndarray  # int64
    ext_offset: np.ndarray  # int64: start of the extended items in buf, -1 when the record has none

    def __len__(self) -> int:
        return len(self.offset)

    def provider_mask(self, guid: uuid.UUID) -> np.ndarray:
        """Boolean mask of the rows whose ProviderId is ``guid``."""
        lo, hi = guid_key(guid)
        mask: np.ndarray = (self.guid_lo == np.uint64(lo)) & (self.guid_hi == np.uint64(hi))
        return mask

    def provider(self, i: int) -> uuid.UUID:
        """The ProviderId of row ``i``."""
        return uuid.UUID(bytes_le=struct.pack("<QQ", int(self.guid_lo[i]), int(self.guid_hi[i])))

    def pointer_size(self, i: int) -> int:
        """4 or 8: the size of pointer fields in row ``i``'s UserData (from the 32/64-bit header flags)."""
        return 4 if int(self.flags[i]) & FLAG_32_BIT_HEADER else 8

    def user_data(self, i: int) -> bytes:
        """Row ``i``'s UserData (a copy)."""
        start = int(self.user_offset[i])
        return self.buf[start : start + int(self.user_len[i])]

    def extended_items(self, i: int) -> list[tuple[int, bytes]]:
        """Row ``i``'s extended data items as ``(ExtType, data)``, in record order; empty when it has none.

        Layout (ETW_FORMAT.md §2.3): ``u16 Reserved1, u16 ExtType, u16 Linkage (bit 0 = another follows),
        u16 DataSize``, the data, padding to 8 bytes. Items that would run past UserData are cut off there.
        """
        pos = int(self.ext_offset[i])
        if pos < 0:
            return []
        end = int(self.user_offset[i])
        items: list[tuple[int, bytes]] = []
        while pos + 8 <= end:
            _reserved, ext_type, linkage, data_size = struct.unpack_from("<HHHH", self.buf, pos)
            data_end = pos + 8 + data_size
            if data_end > end:
                break
            items.append((ext_type, self.buf[pos + 8 : data_end]))
            pos = (data_end + 7) & ~7
            if not linkage & 1:
                break
        return items
