"""Write a report's files all or nothing: every format is rendered in memory first, each file is staged under a
temporary name beside its target and flushed (:mod:`ndis_replay.atomic`), and only when all are written are they
renamed into place. A failure (full disk, read-only folder, Ctrl-C) removes the temporary files and leaves any earlier
report untouched. Report files are replaced when they exist: unlike a results directory, a report is derived and can
always be made again.

Two commands writing the same report at once: the last one to finish wins, whole. Each takes a short lock on every
target (in path order, so two commands cannot deadlock) only for the renames, so one report's HTML, Markdown and JUnit
always come from the same command; neither is refused (a report is cheap to make and the same inputs give the same
report, so refusing would only fail a CI step for nothing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ndis_replay.atomic import OutputLock, discard, publish, stage, unwritable
from ndis_replay.errors import OutputUnwritable
from ndis_replay.reports.data import Report

#: ``--markdown -``: print the Markdown to standard output (for ``>> "$GITHUB_STEP_SUMMARY"``).
STDOUT = "-"


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """Where each format goes: a path, or :data:`STDOUT` for the Markdown; None to leave a format out."""

    html: Path | None = None
    markdown: Path | str | None = None
    junit: Path | None = None

    @property
    def empty(self) -> bool:
        """No format asked for."""
        return self.html is None and self.markdown is None and self.junit is None


def _renderers() -> dict[str, Callable[[Report], str]]:
    # imported here: matplotlib (HTML charts) costs a second to import and only the HTML needs it
    from ndis_replay.reports.html import render_html
    from ndis_replay.reports.junit import render_junit
    from ndis_replay.reports.markdown import render_markdown

    return {"html": render_html, "markdown": render_markdown, "junit": render_junit}


def write_report(report: Report, files: ReportFiles, echo: Callable[[str], None] = print) -> list[Path]:
    """Render and write the formats ``files`` asks for; returns the paths written (the Markdown goes to ``echo``
    when it is :data:`STDOUT`). Raises :class:`OutputUnwritable` naming the file that could not be written."""
    renderers = _renderers()
    texts: list[tuple[Path, str]] = []
    to_stdout: str | None = None
    for kind in ("html", "markdown", "junit"):
        target = getattr(files, kind)
        if target is None:
            continue
        text = renderers[kind](report)
        if kind == "markdown" and str(target) == STDOUT:
            to_stdout = text
        else:
            texts.append((Path(target), text))
    staged: list[tuple[Path, Path]] = []
    try:
        for target, text in texts:
            if target.is_dir():
                raise OutputUnwritable(target, "is a directory")
            tmp = stage(target)
            staged.append((tmp, target))
            try:
                with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                    f.write(text)
            except OSError as exc:
                raise unwritable(target, exc) from exc
        with contextlib.ExitStack() as locks:
            # one lock per distinct file (a second flock on a file this process holds would wait for ever)
            unique = {str(target.resolve()): target for _, target in staged}
            for key in sorted(unique):
                locks.enter_context(OutputLock(unique[key], wait=True))
            for tmp, target in staged:
                publish(tmp, target, replace=True)
    except BaseException:
        for tmp, _ in staged:
            discard(tmp)
        raise
    if to_stdout is not None:
        echo(to_stdout)
    return [target for target, _ in texts]


__all__ = ["STDOUT", "ReportFiles", "write_report"]
