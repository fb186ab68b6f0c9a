"""The error hierarchy and the exit codes CI relies on.

Exceptions carry facts (paths, offsets, names, valid choices), never finished sentences for the user: the
one-line messages are formed in :mod:`ndis_replay.cli`, the only place that turns an error into text and an
exit code (the way click's ``ClickException`` is handled once, in ``BaseCommand.main``).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Process exit codes of ``ndis-replay``; stable, documented in the README, used by CI."""

    OK = 0
    #: a regression or a verifier finding: the run worked and its answer is "no"
    FINDINGS = 1
    #: the command line or a configuration is wrong
    USAGE = 2
    #: an input file cannot be used (damaged, unsupported, empty)
    BAD_INPUT = 3
    #: the machine lacks something the command needs (a tool, a permission, a device)
    ENVIRONMENT = 4
    #: interrupted by the user (128 + SIGINT, the shell convention)
    INTERRUPTED = 130


class ReplayError(Exception):
    """Root of every error ndis-replay raises on purpose."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


# --- bad input (exit 3) -------------------------------------------------------------------------------------


class InputError(ReplayError):
    """An input file cannot be used."""

    exit_code = ExitCode.BAD_INPUT


class TraceFormatError(InputError):
    """A capture is damaged or is not in a format the reader knows.

    ``offset`` is the byte offset in the (decompressed) stream where the problem starts and ``record`` the
    zero-based index of the packet record that could not be read, when known.
    """

    def __init__(
        self,
        path: str | Path,
        reason: str,
        *,
        offset: int | None = None,
        record: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(path, reason, offset, record)
        self.path = str(path)
        self.reason = reason
        self.offset = offset
        self.record = record
        self.hint = hint


class LimitExceeded(TraceFormatError):
    """A length field claims more than a resource limit allows (:mod:`ndis_replay.importers.limits`).

    ``field`` names the field (``"pcap record caplen"``), ``value`` is what it claims and ``limit`` the bound, in
    bytes (characters for a CSV line); ``limit_name`` is the limit's name in ``NDIS_REPLAY_LIMITS``. Refused before
    anything of that size is allocated; a genuine file is read by raising the limit.
    """

    def __init__(
        self,
        path: str | Path,
        field: str,
        value: int,
        limit: int,
        limit_name: str,
        *,
        offset: int | None = None,
        record: int | None = None,
    ) -> None:
        super().__init__(path, f"{field} {value}", offset=offset, record=record)
        self.args = (path, field, value, limit, limit_name, offset, record)
        self.field = field
        self.value = value
        self.limit = limit
        self.limit_name = limit_name


class UnsupportedLinkType(InputError):
    """The capture's link type is one the requested operation cannot handle."""

    def __init__(self, path: str | Path, linktype: int, operation: str) -> None:
        super().__init__(path, linktype, operation)
        self.path = str(path)
        self.linktype = linktype
        self.operation = operation


class EmptyTrace(InputError):
    """The capture holds no packets (or none the operation can use)."""

    def __init__(self, path: str | Path, what: str = "packets") -> None:
        super().__init__(path, what)
        self.path = str(path)
        self.what = what


class NothingToReplay(EmptyTrace):
    """The trace has packets, but none that is sent: every one is a receive (``received`` of ``packets``)."""

    def __init__(self, path: str | Path, packets: int, received: int) -> None:
        super().__init__(path, "packets to replay")
        self.args = (path, packets, received)
        self.packets = packets
        self.received = received


class ResultsError(InputError):
    """A results directory cannot be read: ``reason`` says what is wrong with it."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(path, reason)
        self.path = str(path)
        self.reason = reason


class ResultsVersionError(ResultsError):
    """A results directory written in a format version this ndis-replay does not read."""

    def __init__(self, path: str | Path, version: object, supported: Sequence[int]) -> None:
        super().__init__(path, f"format version {version!r}")
        self.version = version
        self.supported = tuple(supported)


class TraceFileError(InputError):
    """The file cannot be opened or read at all (missing, a directory, no permission)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(path, reason)
        self.path = str(path)
        self.reason = reason


class RunMismatch(InputError):
    """Two results directories that cannot be compared. ``kind`` is ``"trace"`` (different sha256), ``"host"``
    (``fields`` names the differing host fields), ``"measurement"`` (``fields`` names the strategies timed by a
    different engine or timing rule) or ``"strategies"`` (none in common); ``base`` and ``new`` hold the differing
    values (per field or strategy), ``base_label`` / ``new_label`` name the two runs."""

    def __init__(
        self,
        kind: str,
        base_label: str,
        new_label: str,
        *,
        fields: Sequence[str] = (),
        base: object = None,
        new: object = None,
    ) -> None:
        super().__init__(kind, base_label, new_label, tuple(fields))
        self.kind = kind
        self.base_label = base_label
        self.new_label = new_label
        self.fields = tuple(fields)
        self.base = base
        self.new = new


# --- usage and configuration (exit 2) -----------------------------------------------------------------------


class ConfigError(ReplayError):
    """A value given on the command line or in a configuration file is invalid.

    ``choices`` lists the valid values when there is a closed set of them.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, what: str, value: object, reason: str, choices: Sequence[str] = ()) -> None:
        super().__init__(what, value, reason)
        self.what = what
        self.value = value
        self.reason = reason
        self.choices = tuple(choices)


class OutputExists(ReplayError):
    """The output path exists and overwriting was not asked for."""

    exit_code = ExitCode.USAGE

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.path = str(path)


# --- environment (exit 4) -----------------------------------------------------------------------------------


class EnvironmentProblem(ReplayError):
    """The machine lacks something the command needs."""

    exit_code = ExitCode.ENVIRONMENT


class ToolMissing(EnvironmentProblem):
    """An external program (tshark) is not installed; ``package`` names the OS package that provides it."""

    def __init__(self, tool: str, package: str, purpose: str) -> None:
        super().__init__(tool, package, purpose)
        self.tool = tool
        self.package = package
        self.purpose = purpose


class ToolFailed(EnvironmentProblem):
    """An external program ran but failed; ``detail`` is the last line it printed."""

    def __init__(self, tool: str, detail: str) -> None:
        super().__init__(tool, detail)
        self.tool = tool
        self.detail = detail


class NativeCoreMissing(EnvironmentProblem):
    """``--engine native`` was asked for and the compiled core (``ndis_replay.engine.native._core``) is not built;
    ``reason`` is the import error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutputUnwritable(EnvironmentProblem):
    """The output could not be written (read-only folder, full disk, …): ``reason`` is the OS's text and ``errno``
    its error number (ENOSPC, EROFS, …; 0 when no system call failed)."""

    def __init__(self, path: str | Path, reason: str, errno: int = 0) -> None:
        super().__init__(path, reason, errno)
        self.path = str(path)
        self.reason = reason
        self.errno = errno


class OutputBusy(EnvironmentProblem):
    """Another process (``pid``, None when unknown) holds the lock on the output path: two commands were asked to
    write the same place at once."""

    def __init__(self, path: str | Path, pid: int | None) -> None:
        super().__init__(path, pid)
        self.path = str(path)
        self.pid = pid


class MiniportUnavailable(EnvironmentProblem):
    """A device-backed miniport cannot have what it needs: ``what`` (a network namespace, ``/dev/net/tun``, a TAP
    device) failed with ``reason`` (the OS's text) and ``errno`` (EPERM/EACCES: a privilege is missing; ENOENT: the
    device or module is missing)."""

    def __init__(self, miniport: str, what: str, reason: str, errno: int = 0) -> None:
        super().__init__(miniport, what, reason, errno)
        self.miniport = miniport
        self.what = what
        self.reason = reason
        self.errno = errno
