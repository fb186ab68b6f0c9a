"""Run fuzz targets one after another for a fixed time each and summarise what libFuzzer reports.

    python bench/fuzz/run_all.py --seconds 60 pcap pcapng etl csv

Each target runs as ``fuzz_<target>.py corpus/<target> seeds/<target> -max_total_time=SECONDS`` (plus
harness.DEFAULT_FLAGS: libFuzzer adds what it finds to corpus/, which grows from run to run, and reads seeds/);
its full output goes to ``logs/<target>.log``. The summary gives, per target, the executions and exec/s, the
coverage as libFuzzer counts it (``cov``: edges of the instrumented code reached; ``ft``: features), the corpus
size, the peak RSS, and the findings: artifacts (crash-*, timeout-*, oom-*, leak-*) written during this run.
Exits 1 when any target had a finding.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import ARTIFACTS, CORPUS, SEEDS, TARGETS  # noqa: E402

LOGS = HERE / "logs"
_STATS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+.*?exec/s: (\d+) rss: (\d+)Mb", re.M)


def run(target: str, seconds: int, python: str) -> dict[str, object]:
    """Fuzz one target for ``seconds``; returns its summary row."""
    corpus, seeds = CORPUS / target, SEEDS / target
    if not seeds.is_dir():
        raise SystemExit(f"no seeds in {seeds}: run bench/fuzz/make_seeds.py first")
    corpus.mkdir(parents=True, exist_ok=True)
    out = ARTIFACTS / target
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    LOGS.mkdir(exist_ok=True)
    log = LOGS / f"{target}.log"
    started = time.monotonic()
    with log.open("w") as f:
        # -max_total_time ends the run; the wall-clock timeout only guards against a hung interpreter
        cmd = [python, str(HERE / f"fuzz_{target}.py"), str(corpus), str(seeds), f"-max_total_time={seconds}"]
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=seconds + 300, check=False)
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    stats = _STATS.findall(text)
    runs, cov, ft, corp, _eps, rss = (int(x) for x in stats[-1]) if stats else (0, 0, 0, 0, 0, 0)
    findings = sorted(p.name for p in set(out.iterdir()) - before)
    return {
        "target": target,
        "runs": runs,
        "exec/s": round(runs / elapsed) if elapsed else 0,
        "cov": cov,
        "ft": ft,
        "corpus": corp,
        "rss MB": rss,
        "exit": proc.returncode,
        "findings": findings,
        "log": str(log.relative_to(HERE.parent.parent)),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the targets named (all by default) and print one summary line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=list(TARGETS), help=f"of {', '.join(TARGETS)} (default all)")
    parser.add_argument("--seconds", type=int, default=60, help="time per target (default 60)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter with atheris installed")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; the targets are {', '.join(TARGETS)}")
    rows = []
    for target in args.targets:
        print(f"fuzzing {target} for {args.seconds} s ...", flush=True)
        rows.append(run(target, args.seconds, args.python))
    print(f"{'target':8} {'runs':>9} {'exec/s':>7} {'cov':>6} {'ft':>6} {'corpus':>7} {'rss MB':>7}  findings")
    for r in rows:
        found = ", ".join(r["findings"]) or "none"  # type: ignore[arg-type]
        print(
            f"{r['target']:8} {r['runs']:>9,} {r['exec/s']:>7} {r['cov']:>6} {r['ft']:>6} {r['corpus']:>7} "
            f"{r['rss MB']:>7}  {found}  ({r['log']})"
        )
    return 1 if any(r["findings"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
