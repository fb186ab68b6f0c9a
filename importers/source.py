"""Opening a capture file: decompression by magic bytes, a running sha256 and byte-level progress.

The format is decided from content only, never from the file name: a ``.pcap`` that is really gzip, or a
pcapng named ``.cap``, is read for what it is.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ndis_replay.errors import TraceFileError, TraceFormatError

#: Decompressed bytes handed to a reader at a time. Bounds memory independently of the file size.
CHUNK_SIZE = 8 << 20

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),  # little-endian, µs
    b"\xa1\xb2\xc3\xd4": (">", 1000),  # big-endian, µs
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # little-endian, ns
    b"\xa1\xb2\x3c\x4d": (">", 1),  # big-endian, ns
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

_COMPRESSION_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)

#: Formats recognised only to name them in the refusal (the tshark reader may read some of them).
_FOREIGN_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\xa1\xb2\xcd\x34", "modified (Kuznetsov) pcap"),
    (b"\x34\xcd\xb2\xa1", "modified (Kuznetsov) pcap"),
    (b"snoop\x00\x00\x00", "Sun snoop"),
    (b"GMBU", "Microsoft Network Monitor"),
    (b"XCP\x00", "NetXRay/Sniffer"),
    (b"\x04\x22\x4d\x18", "lz4-compressed data"),
    (b"PK\x03\x04", "a zip archive"),
)


class _RawReader(io.RawIOBase):
    """Reads the file itself: feeds every byte to sha256 and reports the position to a progress callback.

    sha256 runs on one background thread, in order: hashlib releases the GIL on large updates, so hashing
    overlaps parsing instead of adding to it.
    """

    def __init__(self, raw: IO[bytes], progress: Callable[[int], None] | None) -> None:
        self._raw = raw
        self._progress = progress
        self._hash = hashlib.sha256()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ndis-replay-sha256")
        self.position = 0

    def readable(self) -> bool:
        return True

    def _account(self, data: bytes) -> None:
        if data:
            self._pool.submit(self._hash.update, data)
            self.position += len(data)
            if self._progress is not None:
                self._progress(self.position)

    def readinto(self, b: Any) -> int:
        """For decompressors, which read through a buffer of their own."""
        n = self._raw.readinto(b)  # type: ignore[attr-defined]
        if n:
            self._account(bytes(memoryview(b)[:n]))
        return n or 0

    def read_fresh(self, n: int) -> bytes:
        """Up to ``n`` bytes in a new bytes object (never reused, so it can back zero-copy columns)."""
        data = self._raw.read(n)
        self._account(data)
        return data

    def finish(self) -> str:
        """Hash the rest of the file (readers may stop early on damage) and return the hex digest."""
        while self.read_fresh(CHUNK_SIZE):
            pass
        self._pool.shutdown(wait=True)
        return self._hash.hexdigest()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._raw.close()
        super().close()


_STREAM_ERRORS = (EOFError, OSError, lzma.LZMAError, ValueError)
#: Decompressed bytes pulled per call: a decompressor that meets a cut stream discards what it decompressed in
#: that call, so small steps bound what a damaged file loses beyond its damage.
_STEP = 8 << 10


def _is_stream_error(exc: Exception) -> bool:
    # gzip/xz/bzip2 raise EOFError/OSError/LZMAError on a cut or corrupt stream; zstandard its own ZstdError
    return isinstance(exc, _STREAM_ERRORS) or type(exc).__name__ == "ZstdError"


@dataclass
class OpenedSource:
    """A capture opened for reading: :meth:`read` yields decompressed bytes."""

    path: Path
    size: int
    compression: str | None
    _counter: _RawReader
    _decompressor: IO[bytes] | None
    _pending: bytes = b""
    _ended: str | None = None  # the decompressor's complaint; "" once reported
    _eof: bool = False

    def head(self, n: int) -> bytes:
        """The first ``n`` decompressed bytes (fewer if the stream is shorter), without consuming them."""
        while len(self._pending) < n and self._ended is None:
            try:
                more = self._pull(n - len(self._pending))
            except Exception as exc:
                if not _is_stream_error(exc):
                    raise
                self._ended = str(exc)  # reported by read() once the good bytes are consumed
                break
            if not more:
                self._eof = True
                break
            self._pending += more
        return self._pending[:n]

    def read(self, n: int) -> bytes:
        """``n`` decompressed bytes, fewer only at the end of the stream; ``b""`` after it.

        Raises :class:`_CompressedStreamEnded` once, after the last good byte, when a compressed container
        is cut or corrupt.
        """
        out = self._pending[:n]
        self._pending = self._pending[n:]
        while len(out) < n and self._ended is None and not self._eof:
            try:
                more = self._pull(n - len(out))
            except Exception as exc:
                if not _is_stream_error(exc):
                    raise
                self._ended = str(exc)
                break
            if not more:
                self._eof = True
                break
            out += more
        if not out and self._ended:
            detail, self._ended = self._ended, ""
            raise _CompressedStreamEnded(detail)
        return out

    def _pull(self, n: int) -> bytes:
        if self._decompressor is None:
            return self._counter.read_fresh(n)
        return self._decompressor.read(min(n, _STEP))

    def sha256(self) -> str:
        return self._counter.finish()

    def close(self) -> None:
        if self._decompressor is not None:
            self._decompressor.close()
        self._counter.close()


class UnknownFormat(TraceFormatError):
    """The file has content, but it is not pcap or pcapng; ``foreign`` names the format when recognised."""

    def __init__(self, path: str | Path, reason: str, foreign: str | None) -> None:
        super().__init__(path, reason, offset=0, hint="--reader tshark reads every format Wireshark reads")
        self.foreign = foreign


class _CompressedStreamEnded(Exception):
    """The compressed container ended early or is corrupt; what was decompressed before stands."""


def open_source(path: str | Path, progress: Callable[[int], None] | None = None) -> OpenedSource:
    """Open ``path``, undo any gzip/zstd/xz/bzip2 compression, and return the decompressed stream."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise TraceFileError(p, "not a regular file")
        raw = open(p, "rb")  # noqa: SIM115 - closed by OpenedSource.close
    except FileNotFoundError:
        raise TraceFileError(p, "no such file") from None
    except PermissionError:
        raise TraceFileError(p, "permission denied") from None
    except IsADirectoryError:
        raise TraceFileError(p, "is a directory") from None
    counter = _RawReader(raw, progress)
    magic = counter.read_fresh(8)
    compression = next((name for m, name in _COMPRESSION_MAGICS if magic.startswith(m)), None)
    if compression is None:
        return OpenedSource(p, size, None, counter, None, _pending=magic)
    # Decompressors read through a buffer; the magic goes back in front of the rest of the file.
    buffered = io.BufferedReader(_Prefixed(magic, counter), buffer_size=1 << 20)
    return OpenedSource(p, size, compression, counter, _decompressor(compression, buffered))


class _Prefixed(io.RawIOBase):
    """``prefix`` followed by the rest of a raw reader."""

    def __init__(self, prefix: bytes, rest: _RawReader) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._rest.readinto(b)


def _decompressor(kind: str, raw: IO[bytes]) -> IO[bytes]:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")
    import zstandard

    reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return reader


def sniff_format(source: OpenedSource) -> str:
    """``"pcap"``, ``"pcapng"``, ``"etl"`` or ``"tracerpt-csv"`` from the first decompressed bytes, else
    :class:`TraceFormatError`."""
    from ndis_replay.importers.etw.container import ETL_SNIFF_BYTES, looks_like_etl
    from ndis_replay.importers.etw.tracerpt import looks_like_tracerpt_csv

    head = source.head(max(ETL_SNIFF_BYTES, 4096))
    if not head and source._ended is not None:
        raise TraceFormatError(source.path, f"{source.compression} stream is damaged ({source._ended})", offset=0)
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    if head[:4] == PCAPNG_MAGIC:
        return "pcapng"
    if looks_like_etl(head):
        return "etl"
    if looks_like_tracerpt_csv(head):
        return "tracerpt-csv"
    if not head:
        what = "empty" if source.compression is None else f"empty once {source.compression}-decompressed"
        raise TraceFormatError(source.path, f"the file is {what}", offset=0)
    foreign = next((name for m, name in _FOREIGN_MAGICS if head.startswith(m)), None)
    inner = f" inside the {source.compression} compression" if source.compression else ""
    if foreign:
        raise UnknownFormat(source.path, f"{foreign} file{inner}, not pcap, pcapng or ETW", foreign)
    raise UnknownFormat(source.path, f"not a pcap, pcapng or ETW capture{inner} (magic bytes {head[:4].hex()})", None)
