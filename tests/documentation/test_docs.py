"""The documentation: the runtime docs are the real docs, and the site builds and renders.

* Every public function and method (``kaext.__all__`` and the public submodules) has its
  own user documentation in ``__doc__`` (what ``help()`` shows), not a pointer elsewhere,
  and no docstring repeats per-OS ranges (they live on the platforms page, generated from
  ``kaext._platform``).
* ``docs/environment.md`` names every ``KAEXT_*`` variable the code reads.
* The Sphinx site builds warning-free with the project's command, its API reference covers
  every public name, its per-OS table is the package's data, and headless Chromium renders
  the index, the API page and a search.  Without Sphinx or Chromium these skip, except in
  CI (``KAEXT_REQUIRE_DOCS=1``), where that is a failure.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paths import ROOT

import kaext

DOCS = ROOT / "docs"
REQUIRED = os.environ.get("KAEXT_REQUIRE_DOCS") == "1"
#: The public submodules the API reference documents (enforce / probe: once they exist).
SUBMODULES = ("adapters", "presets", "constants", "enforce", "probe", "testing")


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (KAEXT_REQUIRE_DOCS=1: install the 'docs' extra and Debian's chromium)")
    pytest.skip(reason)


def _public_modules() -> list[Any]:
    mods = [kaext]
    for name in SUBMODULES:
        if importlib.util.find_spec(f"kaext.{name}") is not None:
            mods.append(importlib.import_module(f"kaext.{name}"))
    return mods


def _public_callables() -> dict[str, Any]:
    """Every public function, class and method (also properties), by its dotted name."""
    found: dict[str, Any] = {}
    for mod in _public_modules():
        for name in getattr(mod, "__all__", ()):
            try:
                obj = getattr(mod, name)
            except ImportError:
                # kaext.adapters' names load their library (requests, httpx) on first use; a
                # venv without it (the wheel checks) has nothing of theirs to document.
                continue
            if inspect.ismodule(obj) or not callable(obj):
                continue
            found[f"{mod.__name__}.{name}"] = obj
            if inspect.isclass(obj) and obj.__module__.startswith("kaext"):
                for attr, raw in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if isinstance(raw, property):
                        found[f"{mod.__name__}.{name}.{attr}"] = raw
                    elif callable(raw) or isinstance(raw, (classmethod, staticmethod)):
                        found[f"{mod.__name__}.{name}.{attr}"] = getattr(obj, attr)
    return found


# --------------------------------------------------------------------------------------
# Runtime docs
# --------------------------------------------------------------------------------------

#: Docstrings that send the reader elsewhere instead of documenting: the backends' own
#: "``Policy.apply``: ... (see ``kaext.Policy.apply``)".
_POINTER = re.compile(r"\(see ``kaext\.|^``Policy\.\w+``:")
#: Per-OS ranges that belong on the platforms page, not in docstrings.
_PER_OS_NUMBERS = re.compile(r"\b(32767|4294967(\.295)?|864000)\b|2\*\*31-1")


def test_public_callables_are_found() -> None:
    names = _public_callables()
    for expected in (
        "kaext.set_keepalive",
        "kaext.Policy.apply",
        "kaext.Policy.from_socket",
        "kaext.adapters.httpx_client",
        "kaext.presets.for_middlebox",
    ):
        assert expected in names


@pytest.mark.parametrize("name", sorted(_public_callables()))
def test_every_public_callable_has_its_own_docstring(name: str) -> None:
    doc = inspect.getdoc(_public_callables()[name]) or ""
    assert len(doc.split()) >= 5, f"{name}: no real docstring: {doc!r}"
    assert not _POINTER.search(doc), f"{name}: the docstring points elsewhere: {doc.splitlines()[0]!r}"


def test_help_of_apply_and_from_socket_is_the_user_documentation() -> None:
    import pydoc

    apply_help = pydoc.render_doc(kaext.Policy.apply, renderer=pydoc.plaintext)
    read_help = pydoc.render_doc(kaext.Policy.from_socket, renderer=pydoc.plaintext)
    assert "Apply the whole policy to ``sock``, all or nothing." in apply_help
    assert "The policy that reproduces ``sock``'s keepalive and user timeout" in read_help
    assert "see ``kaext.Policy" not in apply_help + read_help


@pytest.mark.parametrize("name", sorted(_public_callables()))
def test_docstrings_leave_per_os_ranges_to_the_platforms_page(name: str) -> None:
    doc = inspect.getdoc(_public_callables()[name]) or ""
    hits = _PER_OS_NUMBERS.findall(doc)
    assert not hits, f"{name}: per-OS ranges in the docstring ({hits}); they belong on docs/platforms.md"


# --------------------------------------------------------------------------------------
# Environment variables
# --------------------------------------------------------------------------------------

_READS = re.compile(
    r"""(?:environ\.get\(|environ\[|getenv\(|_flag\(|env\[)\s*["'](KAEXT_[A-Z0-9_]+)["']"""
    r"""|\$\{?(KAEXT_[A-Z0-9_]+)(?=[:}\s"'=-]|$)"""
)


def _variables_read() -> set[str]:
    names: set[str] = set()
    sources = [
        ROOT / "setup.py",
        *(ROOT / "src").rglob("*.py"),
        *(ROOT / "ext").glob("*.[ch]"),
        *(ROOT / "tests").rglob("*.py"),
        *(ROOT / "tools").glob("*"),
        *(ROOT / ".ci").rglob("*.sh"),
    ]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in _READS.finditer(text):
            names.add(match.group(1) or match.group(2))
    return names


def test_environment_page_names_every_variable_the_code_reads() -> None:
    page = DOCS / "environment.md"
    if not page.exists():
        pytest.skip("not a source checkout")
    read = _variables_read()
    assert {"KAEXT_NO_EXTENSIONS", "KAEXT_REQUIRE_EXTENSION", "KAEXT_RUN_POLICY", "KAEXT_PRELOAD_PLAN"} <= read
    text = page.read_text(encoding="utf-8")
    missing = sorted(name for name in read if f"`{name}" not in text)
    assert not missing, f"docs/environment.md does not name: {missing}"


# --------------------------------------------------------------------------------------
# The site
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    """The site built by the project's command (into a temporary directory)."""
    if not (DOCS / "conf.py").exists():
        pytest.skip("not a source checkout")
    for module in ("sphinx", "myst_parser", "furo"):
        if importlib.util.find_spec(module) is None:
            _missing(f"{module} is not installed (pip install '.[docs]')")
    with tempfile.TemporaryDirectory(prefix=f"kaext-docs-{os.getpid()}-") as out:
        done = subprocess.run(
            [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), out],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "WARNING" not in done.stderr, done.stderr
        yield Path(out)


pytestmark = pytest.mark.one_implementation


def _inventory(site: Path) -> set[str]:
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda base, uri: uri)  # type: ignore[arg-type]
    names: set[str] = set()
    for role, entries in inv.data.items() if hasattr(inv, "data") else inv.items():
        if role.startswith("py:"):
            names.update(entries)
    return names


def test_api_reference_covers_every_public_name(site: Path) -> None:
    documented = _inventory(site)
    wanted = {f"kaext.{name}" for name in kaext.__all__ if name != "constants"}
    for mod in _public_modules()[1:]:
        wanted.add(mod.__name__)
        if mod.__name__ != "kaext.constants":  # its names are this platform's header constants
            wanted.update(f"{mod.__name__}.{name}" for name in mod.__all__)
    wanted.update(f"kaext.Policy.{m}" for m in ("apply", "from_socket", "from_timeout", "parse", "socket_options"))
    missing = sorted(wanted - documented)
    assert not missing, f"not in the API reference: {missing}"


def test_platform_table_is_the_package_data(site: Path) -> None:
    from kaext import _platform

    html = (site / "platforms.html").read_text(encoding="utf-8")
    table = html.split('class="kaext-generated', 1)[1].split("</table>", 1)[0]
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", table, re.DOTALL)]
    for family, specs in _platform.FAMILY_SPECS.items():
        for spec in specs.values():
            assert str(spec.describe()) in cells, (family, spec.option)
    # Linux's idle row, cell by cell (the kernel's MAX_TCP_KEEPIDLE, include/net/tcp.h)
    i = cells.index("setsockopt(IPPROTO_TCP, TCP_KEEPIDLE)")
    assert cells[i - 2 : i + 3] == ["Linux", "idle", "setsockopt(IPPROTO_TCP, TCP_KEEPIDLE)", "s", "1 .. 32767"]


# --------------------------------------------------------------------------------------
# Headless Chromium renders it
# --------------------------------------------------------------------------------------


def _dom(url: str) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        _missing("chromium is not installed (Debian's chromium package)")
    assert browser is not None
    with tempfile.TemporaryDirectory(prefix=f"kaext-chromium-{os.getpid()}-") as profile:
        done = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_chromium_renders_the_index(site: Path) -> None:
    dom = _dom((site / "index.html").as_uri())
    assert "<title>kaext" in dom
    for page in ("quickstart.html", "api.html", "platforms.html", "verify.html", "environment.html"):
        assert f'href="{page}"' in dom, page
    assert "KeepaliveState(enabled=True, idle=60.0, interval=10.0, count=5)" in dom


def test_chromium_renders_the_api_page(site: Path) -> None:
    dom = _dom((site / "api.html").as_uri())
    assert 'id="kaext.Policy.apply"' in dom
    assert "Apply the whole policy to" in dom
    assert 'id="kaext.set_keepalive"' in dom


def test_chromium_runs_a_search(site: Path) -> None:
    dom = _dom((site / "search.html").as_uri() + "?q=Policy")
    found = re.search(r"found (\d+) page", dom)
    assert found and int(found.group(1)) > 0, dom[-3000:]
    assert 'href="api.html' in dom.split('id="search-results"', 1)[1]


# --------------------------------------------------------------------------------------
# The habits: nox sessions match the CI steps, tool versions pinned once
# --------------------------------------------------------------------------------------


def _source_file(name: str) -> str:
    path = ROOT / name
    if not path.exists():
        pytest.skip("not a source checkout")
    return path.read_text(encoding="utf-8")


def test_every_ci_step_has_a_nox_session() -> None:
    noxfile = _source_file("noxfile.py")
    steps = {p.name for p in (ROOT / ".ci" / "steps").glob("*.sh")}
    named = set(re.findall(r'_step\(session, "([^"]+\.sh)"\)', noxfile))
    assert steps == named, (
        f"CI steps without a session: {sorted(steps - named)}; sessions without a step: {sorted(named - steps)}"
    )


def test_pre_commit_uses_the_pinned_versions() -> None:
    config = _source_file(".pre-commit-config.yaml")
    pins = dict(re.findall(r"^([a-z-]+)==([\w.]+)$", _source_file(".ci/constraints.txt"), re.MULTILINE))
    revs = dict(re.findall(r"github\.com/[\w-]+/([\w-]+)\n\s+rev: v([\w.]+)", config))
    assert revs["ruff-pre-commit"] == pins["ruff"]
    assert revs["cython-lint"] == pins["cython-lint"]


def test_ci_steps_install_tools_through_the_constraints() -> None:
    for step in sorted((ROOT / ".ci" / "steps").glob("0*.sh")):
        for line in step.read_text(encoding="utf-8").splitlines():
            if re.match(r"\s*python -m pip install", line) and "-c .ci/constraints.txt" not in line:
                pytest.fail(f"{step.name}: installs without the constraints: {line.strip()}")
