"""The client matrix as the documentation shows it is the committed run's, number for number.

``docs/data/client_matrix.json`` is what one run of tests/integration/test_client_matrix.py
wrote; ``tools/render_client_matrix.py`` renders the table of docs/clients.md, the figure
docs/images/client_matrix.svg and the README's excerpt from it.  Each of the three must be
exactly what the file renders today, and the file must be a whole, passing run of the clients
the page has recipes for.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType

import client_matrix
import pytest
from paths import ROOT

pytestmark = pytest.mark.one_implementation

TOOL = ROOT / "tools" / "render_client_matrix.py"
RESULTS = ROOT / "docs" / "data" / "client_matrix.json"


def _render() -> ModuleType:
    if not TOOL.exists() or not RESULTS.exists():
        pytest.skip("not a source checkout")
    spec = importlib.util.spec_from_file_location("render_client_matrix", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("target", ["docs/clients.md", "README.md", "docs/images/client_matrix.svg"])
def test_the_documentation_shows_the_committed_run(target: str) -> None:
    render = _render()
    texts = {path.relative_to(ROOT).as_posix(): text for path, text in render.rendered(render.load()).items()}
    committed = (ROOT / target).read_text(encoding="utf-8")
    hint = "run python tools/render_client_matrix.py"
    assert committed == texts[target], f"{target} differs from what the results file renders: {hint}"


def test_the_results_file_is_a_whole_passing_run() -> None:
    _render()
    doc = json.loads(RESULTS.read_text(encoding="utf-8"))
    assert doc["T"] == client_matrix.T and doc["bound"] == client_matrix.BOUND and doc["cap"] == client_matrix.CAP
    cells = {(c["client"], c["mode"], c["failure"]): c for c in doc["cells"]}
    want = {(n, m, f) for n in client_matrix.CLIENTS for m in ("with", "without") for f in client_matrix.FAILURES}
    assert set(cells) == want
    for (name, mode, failure), cell in cells.items():
        assert cell["outcome"] in ("ok", "error", "blocked", "n/a"), (name, mode, failure, cell)
        assert cell["recipe"] == (name not in client_matrix.NOT_RECIPES)
        if mode == "with" and cell["recipe"] and cell["outcome"] != "n/a":
            assert cell["seconds"] is not None and cell["seconds"] <= doc["bound"], (name, failure, cell)


def test_a_changed_number_is_caught() -> None:
    """The comparison could fail: one cell's time changed renders a different table and figure."""
    render = _render()
    doc = render.load()
    before = render.rendered(doc)
    cell = next(c for c in doc["cells"] if c["mode"] == "with" and c["seconds"] is not None)
    cell["seconds"] += 1.0
    after = render.rendered(doc)
    assert before[render.PAGE] != after[render.PAGE]
    assert before[render.FIGURE] != after[render.FIGURE]


def test_the_pages_count_the_recipes() -> None:
    _render()
    n = len(set(client_matrix.CLIENTS) - client_matrix.NOT_RECIPES)
    assert f"({n} clients, 5 failures, one run)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"for {n} clients" in (ROOT / "docs" / "frameworks.md").read_text(encoding="utf-8")
    assert len(client_matrix.FAILURES) == 5
