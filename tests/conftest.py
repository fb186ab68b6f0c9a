"""Shared fixtures: where the corpus lives, and small helpers for writing captures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Third-party captures, beside the checkout (never copied into the repository).
CORPUS = REPO.parent / "shared" / "corpus"
PCAP_CORPUS = CORPUS / "pcap"
SAMPLES = REPO / "sample_traces"


def corpus_manifest() -> list[dict[str, Any]]:
    """Entries of the pcap corpus MANIFEST.json (empty when the corpus is absent)."""
    path = PCAP_CORPUS / "MANIFEST.json"
    if not path.is_file():
        return []
    entries: list[dict[str, Any]] = json.loads(path.read_text())
    return entries


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not PCAP_CORPUS.is_dir():
        pytest.fail(f"the corpus is missing at {PCAP_CORPUS}: tests read third-party captures from there")
    return PCAP_CORPUS
