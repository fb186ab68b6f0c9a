"""Writing the user's output files all or nothing, and keeping two commands from writing the same place at once.

Every output ndis-replay writes (a results directory, report files, ``--wire`` pcaps, an imported Parquet trace)
goes through :func:`atomic_output` or its two halves :func:`stage` and :func:`publish`: the content is written under
a temporary name in the target's own folder (a rename never crosses file systems), flushed to the disk with fsync
(a crash after the rename must not leave an empty or short file under the final name), then renamed onto the
target. On any failure, Ctrl-C (KeyboardInterrupt) and SystemExit included, the temporary is removed and the target
is as it was. Replacing an existing directory swaps the two atomically (``renameat2(RENAME_EXCHANGE)``), so the old
one stays whole until the new one is complete; refusing an existing target uses ``RENAME_NOREPLACE``, so a target
that appeared while the run was going is not overwritten.

:class:`OutputLock` is an advisory lock (``flock``) on a hidden file beside a target, ``.<name>.lock``, held by a
command for as long as it may write the target: a second command asking for it without waiting gets
:class:`~ndis_replay.errors.OutputBusy`. The kernel releases a flock when its holder dies, so a killed run never
blocks the next one; the lock file is removed on release.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ndis_replay.errors import OutputBusy, OutputExists, OutputUnwritable

#: Suffix of staged (not yet published) outputs; they start with a dot and never look like a result.
TMP_SUFFIX = ".tmp"
#: Suffix of the lock file beside a target.
LOCK_SUFFIX = ".lock"

# renameat2(2) flags (linux/fs.h) and the "current directory" descriptor
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
# errors meaning "this file system or kernel cannot do that rename": fall back to the portable sequence
_NO_RENAMEAT2 = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}
# polars and other Rust writers report an I/O failure as their own exception ending in "(os error N)"
_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")


def unwritable(target: Path, exc: BaseException) -> OutputUnwritable:
    """The :class:`OutputUnwritable` for an OSError (or a library's wrapped I/O error) met writing ``target``."""
    code = os_errno(exc) or 0
    reason = os.strerror(code) if code else str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    return OutputUnwritable(target, reason, errno=code)


def os_errno(exc: BaseException) -> int | None:
    """The errno behind ``exc``: an OSError's, or the one a library names as ``(os error N)``; None otherwise."""
    if isinstance(exc, OSError):
        return exc.errno or 0
    found = _OS_ERROR_TEXT.search(str(exc))
    return int(found.group(1)) if found else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def stage(target: Path, *, directory: bool = False) -> Path:
    """Create the temporary file (or directory) for ``target`` in its folder (made if missing), with the
    permissions of an ordinary output (mkstemp and mkdtemp make them private). Raises OutputUnwritable."""
    target = Path(target)
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=folder))
            os.chmod(tmp, 0o777 & ~_umask())
        else:
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=folder)
            os.close(fd)
            tmp = Path(name)
            os.chmod(tmp, 0o666 & ~_umask())
    except OSError as exc:
        raise unwritable(target, exc) from exc
    return tmp


def discard(tmp: Path) -> None:
    """Remove a staged file or directory (whatever state it is in); never raises."""
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a directory on a file system that cannot sync one: nothing to flush
            raise
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _fsync_tree(child)
    _fsync_path(path)


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(src, dst, flags); False when this libc, kernel or file system does not offer it."""
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if func(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_RENAMEAT2:
        return False
    raise OSError(code, os.strerror(code), str(dst))


@dataclass(frozen=True)
class Replaced:
    """An output this command replaced, whose old version is kept (hidden, beside it) until the command knows
    whether it succeeds: :meth:`drop` it then, or :meth:`restore` it after removing the new one."""

    target: Path
    #: where the old version is now
    old: Path
    #: what to remove to drop it (``old`` itself, or the aside folder holding it)
    holder: Path

    def restore(self) -> None:
        """Put the old version back (the new one must be gone already, for a directory); never raises."""
        with contextlib.suppress(OSError):
            if self.target.exists() and os.path.samefile(self.old, self.target):
                # never replaced (keep_aside's link to the file still there): rename(2) between two links to one
                # file does nothing, so the link is removed instead
                self.old.unlink()
            else:
                os.replace(self.old, self.target)
        if self.holder != self.old:
            discard(self.holder)

    def drop(self) -> None:
        """Remove the old version for good; never raises."""
        discard(self.holder)


def keep_aside(target: str | Path) -> Replaced:
    """Keep the current version of the file ``target`` under a hidden hard link (``.<name>.<pid>.old``) while it is
    replaced: the file itself is not touched, a later rename onto ``target`` leaves the link holding the old bytes."""
    target = Path(target)
    aside = target.with_name(f".{target.name}.{os.getpid()}.old")
    try:
        with contextlib.suppress(FileNotFoundError):
            aside.unlink()
        os.link(target, aside)
    except OSError as exc:
        raise unwritable(target, exc) from exc
    return Replaced(target, aside, aside)


def publish(tmp: Path, target: Path, *, replace: bool, keep_old: list[Replaced] | None = None) -> None:
    """fsync ``tmp`` (a file, or a directory and what it holds), then rename it onto ``target``.

    ``replace=False``: an existing ``target`` (one that appeared after the command checked) raises OutputExists and
    ``tmp`` is kept for the caller to discard. ``replace=True``: an existing directory is exchanged with ``tmp`` in
    one step, an existing file is replaced by the rename; the old version is removed, or with ``keep_old`` kept
    aside and appended to it (see :class:`Replaced`). Raises OutputUnwritable on an OSError.
    """
    tmp, target = Path(tmp), Path(target)
    try:
        _fsync_tree(tmp)
        exists = target.exists() or target.is_symlink()
        if not replace:
            if exists:
                raise OutputExists(target)
            if not _renameat2(tmp, target, _RENAME_NOREPLACE):
                os.rename(tmp, target)  # no atomic refusal here: the check above and the run's lock stand in
        elif exists and tmp.is_dir() and target.is_dir() and not target.is_symlink():
            if _renameat2(tmp, target, _RENAME_EXCHANGE):
                old = Replaced(target, tmp, tmp)  # tmp now holds the old directory
            else:
                # the old one goes aside, the new one in: a crash between the two leaves the old one under .old
                aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
                os.replace(target, aside / "old")
                os.replace(tmp, target)
                old = Replaced(target, aside / "old", aside)
            if keep_old is None:
                old.drop()
            else:
                keep_old.append(old)
        else:
            if exists and keep_old is not None:
                keep_old.append(keep_aside(target))
            os.replace(tmp, target)  # a file onto a directory fails (EISDIR): never removed on the way
        with contextlib.suppress(OSError):
            _fsync_path(target.parent)  # the rename itself reaches the disk
    except OSError as exc:
        if exc.errno == errno.EEXIST and not replace:
            raise OutputExists(target) from exc
        raise unwritable(target, exc) from exc


@contextlib.contextmanager
def atomic_output(
    target: str | Path, *, directory: bool = False, replace: bool = True, keep_old: list[Replaced] | None = None
) -> Iterator[Path]:
    """Stage ``target``, let the caller write the temporary path it yields, then publish it (``replace`` and
    ``keep_old`` as in :func:`publish`).

    Any exception in the block (Ctrl-C and SystemExit too) removes the temporary; an OSError, or a library error
    naming one, becomes :class:`~ndis_replay.errors.OutputUnwritable` for ``target``.
    """
    target = Path(target)
    tmp = stage(target, directory=directory)
    try:
        try:
            yield tmp
        except OutputUnwritable:
            raise
        except Exception as exc:
            if os_errno(exc) is None:
                raise
            raise unwritable(target, exc) from exc
        publish(tmp, target, replace=replace, keep_old=keep_old)
    except BaseException:
        discard(tmp)
        raise


def probe(target: str | Path) -> None:
    """Check up front (before long work) that ``target``'s folder takes a new file: stage one and remove it.
    Raises OutputUnwritable (read-only file system, no permission, a file where the folder should be)."""
    target = Path(target)
    if target.is_dir() and not target.is_symlink():
        raise OutputUnwritable(target, "is a directory", errno=errno.EISDIR)
    missing = [p for p in target.parents if not p.exists()]
    try:
        discard(stage(target))
    finally:
        for folder in missing:  # ordered deepest first: only what the probe made, and only if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()


def sweep(target: str | Path) -> list[Path]:
    """Remove what a killed writer of ``target`` left beside it (its staged ``.<name>.XXXXXXXX.tmp`` or
    ``.<name>.<pid>.tmp``, an aside ``.<name>.XXXXXXXX.old``); returns what was removed. Call it only while holding
    ``target``'s :class:`OutputLock` for as long as anything is staged (``run`` does): then no live writer has one."""
    target = Path(target)
    leftover = re.compile(rf"\.{re.escape(target.name)}\.(\d+|[a-z0-9_]{{8}})\.(tmp|old)")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    removed = [target.parent / name for name in names if leftover.fullmatch(name)]
    for path in removed:
        discard(path)
    return removed


def lock_path(target: str | Path) -> Path:
    """The lock file of ``target``: ``.<name>.lock`` in the same folder."""
    target = Path(target)
    return target.with_name(f".{target.name}{LOCK_SUFFIX}")


class OutputLock:
    """An exclusive advisory lock on ``target`` (see the module docstring); a context manager.

    ``wait=False`` raises :class:`~ndis_replay.errors.OutputBusy` with the holder's pid when another process has
    it; ``wait=True`` blocks until it is free (for the moment of a rename, never for a whole run).
    """

    def __init__(self, target: str | Path, *, wait: bool = False) -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (creating the target's folder and the lock file if needed)."""
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise unwritable(self.target, exc) from exc
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_umask())
            except OSError as exc:
                raise unwritable(self.target, exc) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise OutputBusy(self.target, holder) from None
            except BaseException:
                os.close(fd)
                raise
            # the holder before us may have removed the file between our open and our flock: then we hold a lock
            # on a file nobody else can find, so start again on the file now at the path
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        with contextlib.suppress(OSError):  # who holds it, for the other command's message; the lock works without
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (in that order, see :meth:`acquire`); idempotent."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip())
    return None


__all__ = [
    "LOCK_SUFFIX",
    "TMP_SUFFIX",
    "OutputLock",
    "Replaced",
    "atomic_output",
    "discard",
    "keep_aside",
    "lock_path",
    "os_errno",
    "probe",
    "publish",
    "stage",
    "sweep",
    "unwritable",
]
