"""Fuzz target: the pcap importer (see harness.py).

Run: python bench/fuzz/fuzz_pcap.py bench/fuzz/corpus/pcap bench/fuzz/seeds/pcap -max_total_time=60
(or: make fuzz FUZZ_TARGETS=pcap FUZZ_SECONDS=60).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

if __name__ == "__main__":
    harness.main("pcap")
