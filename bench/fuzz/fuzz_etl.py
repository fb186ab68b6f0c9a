"""Fuzz target: the etl importer (see harness.py).

Run: python bench/fuzz/fuzz_etl.py bench/fuzz/corpus/etl bench/fuzz/seeds/etl -max_total_time=60
(or: make fuzz FUZZ_TARGETS=etl FUZZ_SECONDS=60).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

if __name__ == "__main__":
    harness.main("etl")
