"""Sphinx configuration: MyST Markdown pages, the furo theme, autodoc from the installed kaext.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (the ``docs`` extra).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import kaext  # noqa: E402  (the installed package: the site documents what users get)

project = "kaext"
author = "kaext developers"
copyright = "kaext developers"
release = version = kaext.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "kaext_tables",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
html_theme = "furo"
html_title = f"kaext {release}"
html_static_path = ["_static"]
html_css_files = ["kaext.css"]  # the generated tables fit the page (docs/_static/kaext.css)
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
