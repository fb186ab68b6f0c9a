"""``python -m ndis_replay``: the same as the ``ndis-replay`` command."""

from __future__ import annotations

from ndis_replay.cli import main

if __name__ == "__main__":
    main()
