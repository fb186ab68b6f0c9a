"""Statistics, comparisons, the regression gate and the HTML/Markdown/JUnit renderers.

Empty until reports land (issue 4); the package exists so the layout and packaging are fixed now.
"""

from __future__ import annotations
