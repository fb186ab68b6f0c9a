"""The NDIS object model, pools, verifier, strategies, miniports and the timed replay loop.

Empty until the engine lands (issue 3); the package exists so the layout and packaging are fixed now.
"""

from __future__ import annotations
