"""Sphinx configuration: MyST Markdown pages, the furo theme, autodoc from the installed kaext.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (the ``docs`` extra).
"""

from __future__ import annotations

import importlib.util
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
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
# The pages of modules other parts of the project add: listed in the toctree only once the
# page exists (and, for an API module, once the module can be imported).
OPTIONAL_PAGES = {
    "enforce": "kaext.enforce",
    "probe": "kaext.probe",
    "metrics": None,
    "clients": None,
    "reliability": None,
    "platforms-model": None,
}


def _present(page: str, module: str | None) -> bool:
    if not (HERE / f"{page}.md").exists():
        return False
    return module is None or importlib.util.find_spec(module) is not None


missing = [page for page, module in OPTIONAL_PAGES.items() if not _present(page, module)]
# "api-enforce" / "api-probe": the reference of a module that is not there yet is left out.
missing += [f"api-{name}" for name in ("enforce", "probe") if importlib.util.find_spec(f"kaext.{name}") is None]
exclude_patterns += [f"{page}.md" for page in missing]
LEFT_OUT = set(missing)


def _drop_missing_pages(app: object, docname: str, source: list[str]) -> None:
    """Toctree lines naming a page that is left out are dropped (no dangling entries)."""
    if docname in ("index", "api"):
        source[0] = "\n".join(line for line in source[0].split("\n") if line.strip() not in LEFT_OUT)


def setup(app: object) -> None:
    app.connect("source-read", _drop_missing_pages)  # type: ignore[attr-defined]
