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
#: The public submodules the API reference documents: the library's and the tools'.
SUBMODULES = ("adapters", "presets", "constants", "enforce", "probe", "verify", "inspect", "run", "watch", "testing")


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


def test_every_page_a_toctree_lists_exists() -> None:
    """Each toctree entry of every page is a page of the site: nothing listed is missing, so
    the build needs nothing dropped or hidden (docs/conf.py leaves out no page, silences no warning)."""
    if not (DOCS / "conf.py").is_file():
        pytest.skip("not a source checkout")
    missing = []
    for page in DOCS.glob("*.md"):
        for block in re.findall(r"```\{toctree\}\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL):
            for entry in block.splitlines():
                entry = entry.strip()
                if entry and not entry.startswith(":") and not (DOCS / f"{entry}.md").exists():
                    missing.append(f"{page.name}: {entry}")
    assert not missing, missing
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert "suppress_warnings" not in conf and "source-read" not in conf and "exclude_patterns +=" not in conf


def test_every_test_path_the_sources_name_exists() -> None:
    """A comment, page or script naming a test module (``tests/.../test_x.py``) names one that
    exists: moved tests leave no stale pointers behind."""
    texts = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / ".ci" / "run", ROOT / "noxfile.py"]
    for folder, patterns in (
        ("src", ("*.py", "*.pyi")),
        ("ext", ("*.c", "*.h", "*.pyx", "*.pxi")),
        ("docs", ("*.md",)),
    ):
        for pattern in patterns:
            texts += (ROOT / folder).rglob(pattern)
    texts += (ROOT / ".ci" / "steps").glob("*.sh")
    texts += (ROOT / "benchmarks").glob("*.py")
    stale = sorted(
        {
            f"{path.relative_to(ROOT)}: {name}"
            for path in texts
            if path.is_file()
            for name in re.findall(r"\btests/[\w/]*test_\w+\.py", path.read_text(encoding="utf-8"))
            if not (ROOT / name).exists()
        }
    )
    assert not stale, stale


def test_metrics_page_names_every_metric_the_exporter_exposes() -> None:
    """Every metric family of one real collection (this process, its own sockets) is on the
    metrics page under its exposed name: a new metric without its documentation fails here."""
    if importlib.util.find_spec("prometheus_client") is None:
        _missing("prometheus_client is not installed (pip install '.[metrics]')")
    from kaext import _metrics

    collector = _metrics.InspectCollector(lambda: [os.getpid()], lambda row: None)
    exposed = set(re.findall(r"^# TYPE (\S+) ", _metrics.exposition(collector).decode(), re.MULTILINE))
    exposed = {n for n in exposed if n.startswith("kaext_")}
    assert {"kaext_tcp_connections", "kaext_inspect_duration_seconds"} <= exposed, exposed
    page = (DOCS / "metrics.md").read_text(encoding="utf-8")
    missing = sorted(n for n in exposed if n not in page and f"{n}_total" not in page)
    assert not missing, f"docs/metrics.md does not name: {missing}"


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
    # a platform with a table of its own within its family (Cygwin): its own rows, titled by its name
    for platform, specs in _platform.PLATFORM_SPECS.items():
        for knob, spec in specs.items():
            rows = [i for i, cell in enumerate(cells[:-2]) if platform in cell.lower() and cells[i + 1] == knob]
            assert rows and cells[rows[0] + 2] == str(spec.describe()), (platform, knob)
    # Linux's idle row, cell by cell (the kernel's MAX_TCP_KEEPIDLE, include/net/tcp.h)
    i = cells.index("setsockopt(IPPROTO_TCP, TCP_KEEPIDLE)")
    assert cells[i - 2 : i + 3] == ["Linux", "idle", "setsockopt(IPPROTO_TCP, TCP_KEEPIDLE)", "s", "1 .. 32767"]


# --------------------------------------------------------------------------------------
# Headless Chromium renders it
# --------------------------------------------------------------------------------------


def _dom(url: str, width: int = 0) -> str:
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
                *([f"--window-size={width},2000"] if width else []),
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


@pytest.mark.parametrize("page", ["platforms", "middleboxes"])
def test_generated_tables_fit_the_page_at_1280_px(site: Path, page: str) -> None:
    """At a 1280 px window every column of the generated tables is on the page: none has to be
    scrolled sideways in its wrapper (measured by the browser, in the page's own layout)."""
    probe = site / f"{page}-width-{os.getpid()}.html"
    script = (
        "<script>window.addEventListener('load', () => { const out = [];"
        " for (const t of document.querySelectorAll('table.kaext-generated')) {"
        " const box = t.closest('.table-wrapper') || t.parentElement;"
        " out.push(box.scrollWidth <= box.clientWidth ? 'fits' : 'WIDER'); }"
        " document.body.setAttribute('data-widths', out.join(',')); });</script>"
    )
    probe.write_text((site / f"{page}.html").read_text(encoding="utf-8").replace("</body>", script + "</body>"))
    try:
        dom = _dom(probe.as_uri(), width=1280)
    finally:
        probe.unlink()
    widths = re.search(r'data-widths="([^"]*)"', dom)
    assert widths is not None and widths.group(1), dom[-2000:]
    assert set(widths.group(1).split(",")) == {"fits"}, widths.group(1)


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
