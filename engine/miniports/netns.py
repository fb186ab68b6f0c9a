"""Private network namespaces for device-backed miniports (``tap``), through pyroute2.

A run creates one namespace named ``ndis-replay-<pid>-<random>`` (:data:`PREFIX`), every worker creates its device
inside it, and the run removes the namespace when it ends (also on error, Ctrl-C and SIGTERM: the runner turns
SIGTERM into an exception so that its ``finally`` runs). Devices die with the worker's file descriptors and with the
namespace. A run that was killed outright (SIGKILL, a power cut) leaves its namespace behind: :func:`cleanup` (``ndis-
replay miniports --cleanup``) removes every prefixed namespace whose creating process is gone.

Python 3.11 has no ``os.setns``: :func:`entered` moves the calling *thread* into a namespace with pyroute2's
``setns`` and back. A socket or a TAP file descriptor opened inside stays in that namespace after the thread returns.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from ndis_replay.errors import MiniportUnavailable

#: every namespace the harness creates is named with this prefix
PREFIX = "ndis-replay-"
#: where iproute2 and pyroute2 keep named namespaces (bind mounts)
NETNS_DIR = "/var/run/netns"


def _unavailable(what: str, exc: OSError) -> MiniportUnavailable:
    return MiniportUnavailable("tap", what, exc.strerror or str(exc), exc.errno or 0)


def new_name() -> str:
    """A fresh namespace name: the prefix, this process's pid (:func:`cleanup` spares live ones) and 8 random hex
    digits."""
    return f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def create(name: str) -> None:
    """Create the named namespace; MiniportUnavailable when this process may not (not root, no CAP_SYS_ADMIN)."""
    from pyroute2 import netns

    try:
        netns.create(name)
    except OSError as exc:
        raise _unavailable("a network namespace", exc) from exc
    except Exception as exc:  # pyroute2 reports its child's failure as its own exception types
        raise MiniportUnavailable("tap", "a network namespace", str(exc), errno.EPERM) from exc
    if name not in listing():
        raise MiniportUnavailable("tap", "a network namespace", "it was not created", errno.EPERM)


def remove(name: str) -> bool:
    """Remove the named namespace (its devices go with it once no process holds them); False if it did not
    exist."""
    from pyroute2 import netns

    if name not in listing():
        return False
    try:
        netns.remove(name)
    except FileNotFoundError:
        return False
    return True


def listing() -> list[str]:
    """Names of every named namespace on the host."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []


def leftovers() -> list[str]:
    """Namespaces named with :data:`PREFIX`."""
    return [name for name in listing() if name.startswith(PREFIX)]


def _owner_alive(name: str) -> bool:
    """Whether the pid in a harness namespace's name (``ndis-replay-<pid>-…``) is a running ndis-replay."""
    pid_text = name[len(PREFIX) :].split("-", 1)[0]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        with open(f"/proc/{pid_text}/cmdline", "rb") as fh:
            return b"ndis" in fh.read()
    except OSError:
        return False


@dataclass(frozen=True)
class Cleanup:
    """What :func:`cleanup` did: namespaces removed, and those spared because their run is still going."""

    removed: tuple[str, ...]
    in_use: tuple[str, ...]


def cleanup(*, include_live: bool = False) -> Cleanup:
    """Remove every :data:`PREFIX` namespace left by a run that is gone (and, with ``include_live``, by running
    ones too)."""
    removed: list[str] = []
    live: list[str] = []
    for name in leftovers():
        if not include_live and _owner_alive(name):
            live.append(name)
            continue
        try:
            if remove(name):
                removed.append(name)
        except OSError as exc:
            raise _unavailable(f"removing network namespace {name}", exc) from exc
    return Cleanup(tuple(removed), tuple(live))


@contextlib.contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the body with the calling thread inside namespace ``name`` (None: stay where it is), then return to the
    thread's own namespace."""
    if name is None:
        yield
        return
    from pyroute2 import netns

    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            netns.setns(name, flags=0)
        except OSError as exc:
            raise _unavailable(f"network namespace {name}", exc) from exc
        try:
            yield
        finally:
            netns.setns(saved, flags=0)
    finally:
        os.close(saved)


def write_sysctl(path: str, value: str) -> bool:
    """Write one ``/proc/sys`` value (as seen from the calling thread's namespace); False where it does not exist
    (IPv6 compiled out or disabled at boot)."""
    try:
        with open(path, "w") as fh:
            fh.write(value)
    except FileNotFoundError:
        return False
    return True


__all__ = [
    "NETNS_DIR",
    "PREFIX",
    "Cleanup",
    "cleanup",
    "create",
    "entered",
    "leftovers",
    "listing",
    "new_name",
    "remove",
    "write_sysctl",
]
