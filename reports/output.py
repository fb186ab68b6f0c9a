"""Write a report's files all or nothing: every format is rendered in memory first, each file is written to a
temporary name beside its target, and only when all are written are they renamed into place. A failure (full disk,
read-only folder, Ctrl-C) removes the temporary files and leaves any earlier report untouched. Report files are
replaced when they exist: unlike a results directory, a report is derived and can always be made again."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            except OSError as exc:
                raise OutputUnwritable(target, exc.strerror or str(exc)) from exc
            tmp = Path(tmp_name)
            staged.append((tmp, target))
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                    f.write(text)
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report is an ordinary file
            except OSError as exc:
                raise OutputUnwritable(target, exc.strerror or str(exc)) from exc
        for tmp, target in staged:
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise OutputUnwritable(target, exc.strerror or str(exc)) from exc
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    if to_stdout is not None:
        echo(to_stdout)
    return [target for target, _ in texts]


__all__ = ["STDOUT", "ReportFiles", "write_report"]
