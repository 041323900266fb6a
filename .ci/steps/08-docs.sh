#!/usr/bin/env bash
# The documentation site: built warning-free by the documented command from the docs extra,
# then tests/documentation/test_docs.py against it, with nothing allowed to skip (KAEXT_REQUIRE_DOCS=1:
# Sphinx and Debian's chromium must be there): the API reference covers every public name,
# the per-OS table is kaext._platform's data, and headless Chromium renders the index, the
# API page and a search.  The examples of every page run in the main suite
# (tests/documentation/test_readme.py).  Budget: under a minute (the build about 5 s, Chromium 2 s a page).
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m pip install -q -c .ci/constraints.txt "sphinx" "furo" "myst-parser"
rm -rf docs/_build
python -m sphinx -W --keep-going -b html docs docs/_build/html
KAEXT_REQUIRE_DOCS=1 python -m pytest -q -p no:cacheprovider tests/documentation/test_docs.py
echo "docs: built warning-free, rendered in Chromium"
