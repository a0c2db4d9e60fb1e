"""Sphinx configuration of the TOROS documentation (make docs: warnings are errors)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "TOROS pipeline manager"
author = "the TOROS collaboration"
copyright = "2026, the TOROS collaboration"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "toros_reference"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "screenshots/README.md"]
html_theme = "furo"
html_title = "TOROS pipeline manager"
html_static_path: list[str] = []
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
autodoc_typehints = "description"
autodoc_member_order = "bysource"
# Links into the repository (source files, deploy/, benchmarks/) are shown as text: the site is built from it.
suppress_warnings = ["myst.xref_missing"]
nitpicky = False
