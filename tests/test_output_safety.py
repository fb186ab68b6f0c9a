"""No half-written results (issue 8): a full disk, a read-only folder, an existing results directory and two commands
writing the same place at once, each simulated for real — a 2 MiB tmpfs filled to the brim, a read-only bind mount,
two ``ndis-replay`` processes started together — and driven through the CLI. Afterwards the output folder holds
nothing that looks like a result: no run.json, no report, no temporary or lock file.

Mounting needs root (CAP_SYS_ADMIN); where it is refused the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from ndis_replay.atomic import OutputLock, atomic_output, lock_path
from ndis_replay.cli import cli
from ndis_replay.errors import ExitCode, OutputBusy, OutputExists, OutputUnwritable
from ndis_replay.results import PACKETS_PARQUET, RUN_JSON, load
from tests.conftest import SAMPLES
from tests.replay_helpers import write_capture, write_receive_only

#: A trace whose every output is bigger than the headroom the tests leave (results ~15 KB, report ~100 KB,
#: --wire pcap ~700 KB, Parquet trace), so each write really runs out of space.
TRACE = SAMPLES / "request_response.pcapng"
#: Free bytes left on the full file system: none, or two tmpfs pages (the first file of a result may fit, a later
#: one does not: the write fails part of the way through).
HEADROOM = {"full": 0, "8KiB-free": 8192}


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


def script() -> str:
    return str(Path(sys.executable).with_name("ndis-replay"))


def listing(folder: Path, ignore: tuple[str, ...] = ("filler",)) -> list[str]:
    """Everything under ``folder`` (hidden files included), relative, but the test's own filler."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name not in ignore)


def one_error_line(result: Result | subprocess.CompletedProcess[str], code: ExitCode, fragment: str) -> None:
    err = result.stderr
    returncode = result.exit_code if isinstance(result, Result) else result.returncode
    assert returncode == code, err
    lines = [line for line in err.splitlines() if not line.startswith("report: ")]
    assert len(lines) == 1 and lines[0].startswith("ndis-replay: error: "), err
    assert fragment in lines[0], err
    assert "Traceback" not in err


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} is not permitted here: {done.stderr.strip() or done.returncode}")


def umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)  # busy: detach it at least


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    folder = tmp_path / "small"
    folder.mkdir()
    mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        umount(folder)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A read-only bind mount of an ordinary folder (root ignores chmod, not a read-only mount)."""
    source, folder = tmp_path / "rw", tmp_path / "ro"
    source.mkdir()
    folder.mkdir()
    mount("--bind", str(source), str(folder))
    try:
        mount("-o", "remount,ro,bind", str(folder))
        yield folder
    finally:
        umount(folder)


def fill(folder: Path, headroom: int) -> None:
    """Fill the file system of ``folder`` until ``headroom`` bytes are free (rounded to its block size)."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / "filler", "wb") as f:
        try:
            f.write(b"\0" * max(0, free - headroom))
            f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    stat = os.statvfs(folder)
    assert stat.f_bavail * stat.f_frsize <= headroom


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results directory on the ordinary disk (for `report`)."""
    out = tmp_path_factory.mktemp("made") / "res"
    result = run("run", TRACE, "-s", "reuse", "--rounds", "1", "--warmup", "0", "--out", out)
    assert result.exit_code == 0, result.stderr
    return out


# --- a full disk -------------------------------------------------------------------------------------------------


def _full_results(fs: Path, elsewhere: Path, res: Path) -> tuple[list[str], Path]:
    return ["run", str(TRACE), "-s", "reuse", "--rounds", "1", "--warmup", "0", "--out", str(fs / "res"),
            "--report", str(fs / "r.html"), "--junit", str(fs / "j.xml")], fs / "res"  # fmt: skip


def _full_report_of_run(fs: Path, elsewhere: Path, res: Path) -> tuple[list[str], Path]:
    return ["run", str(TRACE), "-s", "reuse", "--rounds", "1", "--warmup", "0", "--out", str(elsewhere / "res"),
            "--report", str(fs / "r.html")], fs / "r.html"  # fmt: skip


def _full_report(fs: Path, elsewhere: Path, res: Path) -> tuple[list[str], Path]:
    return ["report", str(res), "-o", str(fs / "r.html"), "--markdown", str(fs / "s.md"),
            "--junit", str(fs / "j.xml")], fs / "r.html"  # fmt: skip


def _full_wire(fs: Path, elsewhere: Path, res: Path) -> tuple[list[str], Path]:
    return ["run", str(TRACE), "-s", "reuse", "--rounds", "1", "--warmup", "0", "--out", str(elsewhere / "res"),
            "--wire", str(fs / "w.pcap")], fs / "w.pcap"  # fmt: skip


def _full_import(fs: Path, elsewhere: Path, res: Path) -> tuple[list[str], Path]:
    return ["import", str(TRACE), "-o", str(fs / "t.parquet")], fs / "t.parquet"


FULL_CASES: dict[str, Callable[[Path, Path, Path], tuple[list[str], Path]]] = {
    "run-results-and-report": _full_results,
    "run-report-only": _full_report_of_run,
    "report-html-md-junit": _full_report,
    "run-wire-pcap": _full_wire,
    "import-parquet": _full_import,
}


@pytest.mark.parametrize("headroom", list(HEADROOM.values()), ids=list(HEADROOM))
@pytest.mark.parametrize("case", list(FULL_CASES), ids=list(FULL_CASES))
def test_full_disk_is_one_line_exit_4_and_leaves_nothing(
    small_fs: Path, tmp_path: Path, results_dir: Path, case: str, headroom: int
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args, failing = FULL_CASES[case](small_fs, elsewhere, results_dir)
    fill(small_fs, headroom)
    result = run(*args)
    one_error_line(result, ExitCode.ENVIRONMENT, f"no space left on device writing {failing}; nothing was written")
    assert listing(small_fs) == []  # no result, no report, no temporary, no lock file
    assert listing(elsewhere) == []  # --wire or --report failed: the run's results directory was not kept either


def test_full_disk_with_force_keeps_the_old_results(small_fs: Path) -> None:
    out = small_fs / "res"
    first = run("run", TRACE, "-s", "alloc", "--rounds", "1", "--warmup", "0", "--out", out)
    assert first.exit_code == 0, first.stderr
    before = {name: (out / name).read_bytes() for name in (RUN_JSON, PACKETS_PARQUET)}
    fill(small_fs, HEADROOM["8KiB-free"])
    result = run("run", TRACE, "-s", "reuse", "--rounds", "1", "--warmup", "0", "--out", out, "--force")
    one_error_line(result, ExitCode.ENVIRONMENT, f"no space left on device writing {out}")
    assert listing(small_fs) == ["res", f"res/{PACKETS_PARQUET}", f"res/{RUN_JSON}"]
    assert {name: (out / name).read_bytes() for name in before} == before
    assert [s.name for s in load(out).strategies] == ["alloc"]


# --- a read-only folder ------------------------------------------------------------------------------------------

RUN = ["run", str(TRACE), "-s", "reuse", "--rounds", "1", "--warmup", "0"]
READ_ONLY_CASES: dict[str, tuple[list[str], str]] = {
    "run-out": ([*RUN, "--out", "{ro}/res"], "{ro}/res"),
    "run-report": ([*RUN, "--out", "{rw}/res", "--report", "{ro}/r.html"], "{ro}/r.html"),
    "run-wire": ([*RUN, "--out", "{rw}/res", "--wire", "{ro}/w.pcap"], "{ro}/w.pcap"),
    "report": (["report", "{res}", "-o", "{ro}/r.html"], "{ro}/r.html"),
    "import": (["import", str(TRACE), "-o", "{ro}/t.parquet"], "{ro}/t.parquet"),
}


@pytest.mark.parametrize("case", list(READ_ONLY_CASES), ids=list(READ_ONLY_CASES))
def test_read_only_folder_is_one_line_exit_4_before_any_work(
    read_only: Path, tmp_path: Path, results_dir: Path, case: str
) -> None:
    rw = tmp_path / "writable"
    rw.mkdir()
    names = {"ro": read_only, "rw": rw, "res": results_dir}
    args, failing = READ_ONLY_CASES[case]
    result = run(*(a.format(**names) for a in args))
    one_error_line(result, ExitCode.ENVIRONMENT, f"cannot write {failing.format(**names)}: Read-only file system")
    assert listing(read_only) == [] and listing(rw) == []
    # refused before the replay: no table of results was printed, no results directory made beside it
    assert "results:" not in result.stdout


# --- an existing results directory -------------------------------------------------------------------------------


@pytest.mark.parametrize("existing", ["results-dir", "empty-dir", "wire-pcap"])
def test_existing_output_is_refused_before_the_trace_is_read(tmp_path: Path, existing: str) -> None:
    """The trace is damaged: an exit 2 (not 3) proves the outputs are checked before the trace is even opened."""
    damaged = tmp_path / "damaged.pcapng"
    damaged.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\xff" * 40)
    out, wire = tmp_path / "res", tmp_path / "w.pcap"
    if existing == "wire-pcap":
        wire.write_bytes(b"keep me")
        kept = wire
    else:
        out.mkdir()
        if existing == "results-dir":
            (out / RUN_JSON).write_text("{}")
        kept = out
    before = listing(tmp_path)
    result = run("run", damaged, "-s", "reuse", "--out", out, "--wire", wire)
    one_error_line(result, ExitCode.USAGE, f"{kept} exists; pass --force to replace it")
    assert listing(tmp_path) == before  # untouched, and no lock file left
    assert wire.read_bytes() == b"keep me" if existing == "wire-pcap" else not wire.exists()


def test_force_replaces_results_and_wire_whole(tmp_path: Path) -> None:
    out, wire = tmp_path / "res", tmp_path / "w.pcap"
    base = ("run", TRACE, "--rounds", "1", "--warmup", "0", "--out", out, "--wire", wire)
    assert run(*base, "-s", "alloc").exit_code == 0
    old_wire = wire.read_bytes()
    refused = run(*base, "-s", "reuse")
    one_error_line(refused, ExitCode.USAGE, "exists; pass --force")
    assert [s.name for s in load(out).strategies] == ["alloc"] and wire.read_bytes() == old_wire
    assert run(*base, "-s", "reuse", "--force").exit_code == 0
    res = load(out)
    assert [s.name for s in res.strategies] == ["reuse"]
    assert res.packets is not None and res.packets["strategy"].unique().to_list() == ["reuse"]
    assert wire.read_bytes()[:4] == old_wire[:4] and len(wire.read_bytes()) == len(old_wire)  # same frames, new file
    assert listing(tmp_path) == ["res", f"res/{PACKETS_PARQUET}", f"res/{RUN_JSON}", "w.pcap"]


def test_a_failed_forced_run_restores_every_old_output(tmp_path: Path) -> None:
    """Two traces, --force over the outputs of an earlier run; the second trace turns out unusable after the first
    one's results and --wire files were replaced: the earlier run's outputs are all back, byte for byte."""
    first, second = write_capture(tmp_path / "a.pcapng"), write_capture(tmp_path / "b.pcapng")
    out, wire = tmp_path / "out", tmp_path / "w.pcap"
    base = ("run", first, second, "--rounds", "1", "--warmup", "0", "--out", out, "--wire", wire)
    assert run(*base, "-s", "alloc").exit_code == 0
    before = {name: (tmp_path / name).read_bytes() for name in listing(tmp_path) if (tmp_path / name).is_file()}
    write_receive_only(second)
    result = run(*base, "-s", "alloc", "--force")
    one_error_line(result, ExitCode.BAD_INPUT, "b.pcapng: no packets to replay")
    after = {name: (tmp_path / name).read_bytes() for name in listing(tmp_path) if (tmp_path / name).is_file()}
    assert after.keys() == before.keys() and "w.a.alloc.pcap" in after and "out/a/run.json" in after
    assert {k: v for k, v in after.items() if k != "b.pcapng"} == {k: v for k, v in before.items() if k != "b.pcapng"}


# --- two commands writing the same place at once -----------------------------------------------------------------


def _start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [script(), *(str(a) for a in args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.parametrize("force", [False, True], ids=["plain", "both-force"])
def test_two_runs_to_one_folder_give_one_whole_result_and_one_error(tmp_path: Path, force: bool) -> None:
    out = tmp_path / "res"
    extra = ["--force"] if force else []
    common: list[str | Path] = [TRACE, "--rounds", "40", "--warmup", "1", "--out", out, *extra]
    procs = {name: _start("run", *common, "-s", name) for name in ("reuse", "alloc")}
    done = {name: (p, *p.communicate(timeout=300)) for name, p in procs.items()}
    codes = sorted(p.returncode for p, _, _ in done.values())
    assert codes == [0, ExitCode.ENVIRONMENT], {n: (p.returncode, err) for n, (p, _, err) in done.items()}
    winner = next(n for n, (p, _, _) in done.items() if p.returncode == 0)
    err = next(e for p, _, e in done.values() if p.returncode != 0)
    assert err.count("\n") == 1 and err.startswith("ndis-replay: error: "), err
    assert f"{out} is being written by another ndis-replay (pid " in err
    res = load(out)  # complete: both files, readable
    assert [s.name for s in res.strategies] == [winner]
    assert res.packets is not None and res.packets["strategy"].unique().to_list() == [winner]  # not a mixture
    assert listing(tmp_path) == ["res", f"res/{PACKETS_PARQUET}", f"res/{RUN_JSON}"]


def test_a_held_lock_refuses_at_once_and_a_dead_holder_blocks_nothing(tmp_path: Path) -> None:
    out = tmp_path / "res"
    args = ("run", TRACE, "-s", "reuse", "--rounds", "1", "--warmup", "0", "--out", out)
    with OutputLock(out):  # another command holds it (flock conflicts between two open files, even in one process)
        one_error_line(
            run(*args), ExitCode.ENVIRONMENT, f"{out} is being written by another ndis-replay (pid {os.getpid()})"
        )
    assert listing(tmp_path) == []
    # a holder killed outright (SIGKILL: no cleanup) leaves its lock file; the kernel dropped the lock with it
    holder = subprocess.run(
        [sys.executable, "-c",
         "import os, signal, sys; from ndis_replay.atomic import OutputLock; "
         "OutputLock(sys.argv[1]).acquire(); os.kill(os.getpid(), signal.SIGKILL)", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert holder.returncode == -signal.SIGKILL and lock_path(out).exists()
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    assert listing(tmp_path) == ["res", f"res/{PACKETS_PARQUET}", f"res/{RUN_JSON}"]  # the stale lock file is gone


def test_leftovers_of_a_killed_run_are_swept_and_others_kept(tmp_path: Path) -> None:
    """What a run killed with SIGKILL leaves (its staged directory and --wire file, a replaced directory set aside)
    is removed by the next run of the same outputs, under their lock; look-alikes of other names stay."""
    out, wire = tmp_path / "res", tmp_path / "w.pcap"
    staged = [tmp_path / ".res.k1ll3d_x.tmp", tmp_path / ".res.abcdefgh.old", tmp_path / ".w.pcap.4242.tmp"]
    for path in staged[:2]:
        path.mkdir()
        (path / RUN_JSON).write_text("{")
    staged[2].write_bytes(b"half")
    others = [tmp_path / ".res.x.abcdefgh.tmp", tmp_path / "res.abcdefgh.tmp"]
    for path in others:
        path.write_text("not ours")
    result = run("run", TRACE, "-s", "reuse", "--rounds", "1", "--warmup", "0", "--out", out, "--wire", wire)
    assert result.exit_code == 0, result.stderr
    assert listing(tmp_path) == sorted(
        [".res.x.abcdefgh.tmp", "res", f"res/{PACKETS_PARQUET}", f"res/{RUN_JSON}", "res.abcdefgh.tmp", "w.pcap"]
    )


def test_two_reports_to_one_file_last_whole_one_wins(tmp_path: Path, results_dir: Path) -> None:
    """Two `report` commands, one plain and one against a baseline, write the same HTML and Markdown at once: both
    succeed (a report is derived, the last complete one wins), and both files come from the same command."""
    html, md = tmp_path / "r.html", tmp_path / "s.md"
    plain = ("report", results_dir, "-o", html, "--markdown", md)
    procs = [_start(*plain), _start(*plain, "--baseline", results_dir)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    text, summary = html.read_text(), md.read_text()
    assert text.rstrip().endswith("</html>")
    assert ("baseline" in text) == ("baseline" in summary)  # never one command's HTML with the other's Markdown
    assert listing(tmp_path) == ["r.html", "s.md"]


# --- the helper itself: interruptions ----------------------------------------------------------------------------

FAILURES: dict[str, BaseException] = {
    "ctrl-c": KeyboardInterrupt(),
    "system-exit": SystemExit(143),
    "enospc": OSError(errno.ENOSPC, "No space left on device"),
    "polars-io-error": pl.exceptions.ComputeError(
        "parquet: underlying IO error: No space left on device (os error 28)"
    ),
    "bug": RuntimeError("not an I/O error"),
}


@pytest.mark.parametrize("directory", [False, True], ids=["file", "directory"])
@pytest.mark.parametrize("failure", list(FAILURES), ids=list(FAILURES))
def test_atomic_output_removes_the_temporary_on_any_failure(tmp_path: Path, failure: str, directory: bool) -> None:
    target = tmp_path / "out"
    exc = FAILURES[failure]
    expected = OutputUnwritable if failure in ("enospc", "polars-io-error") else type(exc)
    with pytest.raises(expected) as info, atomic_output(target, directory=directory) as tmp:
        (tmp / "half" if directory else tmp).write_bytes(b"half")
        raise exc
    raised = info.value
    if expected is OutputUnwritable:
        assert isinstance(raised, OutputUnwritable) and raised.errno == errno.ENOSPC
    assert listing(tmp_path) == []


def test_the_lock_names_its_holder(tmp_path: Path) -> None:
    target = tmp_path / "x"
    with OutputLock(target), pytest.raises(OutputBusy) as info:
        OutputLock(target).acquire()
    assert info.value.pid == os.getpid() and not lock_path(target).exists()


@pytest.mark.parametrize("directory", [False, True], ids=["file", "directory"])
def test_a_target_that_appears_during_the_write_is_not_overwritten(tmp_path: Path, directory: bool) -> None:
    """The re-check at the rename (renameat2 RENAME_NOREPLACE): without --force, a target someone made while the
    output was being written is left alone and the command is refused, as if it had existed from the start."""
    target = tmp_path / "out"
    with pytest.raises(OutputExists), atomic_output(target, directory=directory, replace=False) as tmp:
        (tmp / RUN_JSON if directory else tmp).write_text("new")
        target.mkdir()  # an empty directory: a plain rename(2) of a directory would silently replace it
    assert listing(tmp_path) == ["out"] and target.is_dir()
