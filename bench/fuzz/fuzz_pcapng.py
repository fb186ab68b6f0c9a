"""Fuzz target: the pcapng importer (see harness.py).

Run: python bench/fuzz/fuzz_pcapng.py bench/fuzz/corpus/pcapng bench/fuzz/seeds/pcapng -max_total_time=60
(or: make fuzz FUZZ_TARGETS=pcapng FUZZ_SECONDS=60).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

if __name__ == "__main__":
    harness.main("pcapng")
