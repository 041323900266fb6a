"""The README and the documentation pages work as written: the README's commands are the ones
CI runs, and every Python example in README.md and docs/**/*.md runs.

Rules for the examples (the harness below enforces them), the same in every page:

* Every fenced ```python block is executed as a script of its own, in a fresh
  namespace that already has ``sock`` (a TCP socket connected to a loopback echo
  server), ``url`` (``http://127.0.0.1:PORT/`` of a loopback HTTP server that
  answers 200 ``ok``) and ``address`` (``("127.0.0.1", PORT)`` of the echo
  server).  Anything else a block needs it imports or makes itself.
* A comment line ``# -> TEXT`` directly under a ``print(...)`` call shows what it
  prints; under any other bare expression it shows the expression's ``repr``.  The
  harness checks it.  ``...`` inside TEXT stands for any text (a part that varies);
  several ``# ->`` lines in a row are the lines of a longer output.  Shown output
  is what Linux prints.
* ```sh blocks are not run here, except those a test names (Quick start).
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import plain_user
import pytest
import servers
from paths import ROOT

import kaext

README = ROOT / "README.md"
DOCS = ROOT / "docs"
pytestmark = pytest.mark.one_implementation

_SHOWN = re.compile(r"^\s*# -> ?(.*)$")


def _readme() -> str:
    if not README.exists():
        pytest.skip("not a source checkout (tests run from an installed wheel)")
    return README.read_text(encoding="utf-8")


def _pages() -> list[Path]:
    """README.md and every Markdown page of the documentation (not the built site)."""
    if not README.exists():
        return []
    pages = [README]
    if DOCS.is_dir():
        pages += sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)
    return pages


def _blocks_of(page: Path) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) for every ```python block of ``page``."""
    blocks, lines = [], page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            blocks.append((start, "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return blocks


def _python_blocks() -> list[tuple[str, int, str]]:
    """(page relative to the root, line, code) for every ```python block of every page."""
    return [(page.relative_to(ROOT).as_posix(), start, code) for page in _pages() for start, code in _blocks_of(page)]


# --------------------------------------------------------------------------------------
# What every block finds defined: sock, url, address
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _echo_server() -> Iterator[tuple[str, int]]:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, name="readme-echo", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


@pytest.fixture(scope="module")
def servers_for_examples() -> Iterator[tuple[str, tuple[str, int]]]:
    with servers.http_server() as base, _echo_server() as address:
        yield base + "/", address


# --------------------------------------------------------------------------------------
# Running a block, checking "# ->" lines
# --------------------------------------------------------------------------------------


def _matches(expected: str, actual: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual, re.DOTALL) is not None


def _shown_after(lines: list[str], last_line: int) -> tuple[list[str], int] | None:
    """The ``# ->`` lines directly under line ``last_line`` (1-based), and where they end."""
    shown = []
    i = last_line  # index of the next line
    while i < len(lines) and (m := _SHOWN.match(lines[i])):
        shown.append(m.group(1).rstrip())
        i += 1
    return (shown, i) if shown else None


def run_block(code: str, namespace: dict[str, Any], where: str) -> int:
    """Execute ``code`` statement by statement, checking shown output; returns how many were checked."""
    tree = ast.parse(code, where)
    lines = code.splitlines()
    checked = 0
    claimed: set[int] = set()
    for node in tree.body:
        shown = _shown_after(lines, node.end_lineno or node.lineno)
        module = ast.Module(body=[node], type_ignores=[])
        if shown is None:
            exec(compile(module, where, "exec"), namespace)
            continue
        expected, _ = shown
        claimed.update(range(node.end_lineno or 0, (node.end_lineno or 0) + len(expected)))
        assert isinstance(node, ast.Expr), f"{where}:{node.lineno}: '# ->' under a statement that is no expression"
        call = node.value
        is_print = isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print"
        if is_print:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(module, where, "exec"), namespace)
            actual = out.getvalue().rstrip("\n")
        else:
            actual = repr(eval(compile(ast.Expression(node.value), where, "eval"), namespace))
        want = "\n".join(expected)
        assert _matches(want, actual), f"{where}:{node.lineno}: shown\n  {want}\nbut it gives\n  {actual}"
        checked += 1
    stray = [i + 1 for i, line in enumerate(lines) if _SHOWN.match(line) and i not in claimed]
    assert not stray, f"{where}: '# ->' lines {stray} are not directly under an expression"
    return checked


@pytest.mark.parametrize(
    ("page", "start", "code"), _python_blocks(), ids=[f"{page}:{start}" for page, start, _ in _python_blocks()]
)
def test_readme_python_example(
    page: str, start: int, code: str, servers_for_examples: tuple[str, tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, address = servers_for_examples
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # the examples talk to loopback servers directly
    if "# ->" in code and not sys.platform.startswith("linux"):
        pytest.skip("the output shown in the documentation is Linux's")
    if page == "docs/enforce.md" and kaext.IMPLEMENTATION != "c":
        # kaext.enforce assembles its BPF programs in the C extension; the pure-Python install
        # raises ENOSYS, as the page says (tests/integration/test_enforce.py checks that).
        pytest.skip("the enforce page's example needs the C extension")
    if page == "docs/watch.md" and (kaext.IMPLEMENTATION != "c" or os.geteuid() != 0):
        # the watch page's example loads BPF programs: the C extension and root (test_watch.py
        # checks the refusals)
        pytest.skip("the watch page's example needs the C extension and root")
    with socket.create_connection(address) as sock, _cgroups_removed(page):
        namespace: dict[str, Any] = {"__name__": "__readme__", "sock": sock, "url": url, "address": address}
        run_block(code, namespace, f"{page}:{start}")


@contextlib.contextmanager
def _cgroups_removed(page: str) -> Iterator[None]:
    """The enforce page's example makes the cgroup ``kaext-doc-PID`` and removes it at its end;
    also when it fails half-way, it is removed here (detached first)."""
    try:
        yield
    finally:
        if page == "docs/enforce.md":
            import kaext.enforce

            path = os.path.join(kaext.enforce.own_cgroup(), f"kaext-doc-{os.getpid()}")
            if os.path.isdir(path):
                kaext.enforce.detach(path)
                os.rmdir(path)


def test_readme_has_python_examples() -> None:
    _readme()
    assert len(_blocks_of(README)) >= 2
    assert len(_python_blocks()) >= 20  # README and docs together


def test_every_page_with_python_is_collected() -> None:
    """A page's ```python blocks are all found (an unclosed or indented fence would hide one)."""
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        assert text.count("```python") == len(_blocks_of(page)), page


# --------------------------------------------------------------------------------------
# The harness itself: a wrong "# ->" line fails
# --------------------------------------------------------------------------------------


def test_harness_checks_shown_output() -> None:
    ns: dict[str, Any] = {}
    assert run_block("x = [1, 2]\nx\n# -> [1, 2]\nprint('a b')\n# -> a ...\n", ns, "t") == 2
    with pytest.raises(AssertionError, match="but it gives"):
        run_block("1 + 1\n# -> 3\n", {}, "t")
    with pytest.raises(AssertionError, match="but it gives"):
        run_block("print('one')\n# -> two\n", {}, "t")
    with pytest.raises(AssertionError, match="not directly under"):
        run_block("x = 1\n\n# -> 1\n", {}, "t")
    with pytest.raises(AssertionError, match="no expression"):
        run_block("x = 1\n# -> 1\n", {}, "t")
    assert run_block("print('a\\nb')\n# -> a\n# -> b\n", {}, "t") == 1


# --------------------------------------------------------------------------------------
# The two set-up commands in Quick start are the ones CI runs
# --------------------------------------------------------------------------------------


def _readme_commands() -> list[str]:
    text = _readme()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick, re.DOTALL)
    assert block, "the Quick start section has no ```sh block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_has_a_verifier_and_a_test_command() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("python -m kaext.verify")
    assert commands[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    if not (ROOT / ".ci" / "run").exists():
        pytest.skip("not a source checkout")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _readme_commands()[1] in ci


# --------------------------------------------------------------------------------------
# The verifier output shown in the documentation is what the verifier prints
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the documentation shows Linux's table")
def test_readme_verifier_table_rows_are_real() -> None:
    from kaext import verify

    _readme()
    section = (DOCS / "verify.md").read_text(encoding="utf-8")
    sample = re.findall(r"```\n(kaext .*?)```", section, re.DOTALL)
    assert sample, "no verifier output in docs/verify.md"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        verify.main([])
    real = [line.rstrip() for line in out.getvalue().splitlines()]
    rows = [line.rstrip() for line in sample[0].splitlines() if line.startswith(("socket ", "IPv4 ", "IPv6 ", "---"))]
    assert len(rows) >= 5
    missing = [row for row in rows if row not in real]
    assert not missing, f"verifier lines in docs/verify.md the verifier does not print: {missing}"


# --------------------------------------------------------------------------------------
# "Test your own client" (docs/testing.md): its test files pass under pytest, as root and as a
# plain user under `kaext testing --`
# --------------------------------------------------------------------------------------

_TEST_FILE = re.compile(r"^# (test_\w+\.py)\n")


def _test_files(page: Path) -> dict[str, str]:
    """The blocks of ``page`` that are a test file a user pastes: first line ``# test_NAME.py``."""
    return {m.group(1): code for _, code in _blocks_of(page) if (m := _TEST_FILE.match(code))}


def _run_test_files(files: dict[str, str], python: list[str]) -> subprocess.CompletedProcess[str]:
    folder = tempfile.mkdtemp(prefix="kaext-doc-tests-")
    try:
        os.chmod(folder, 0o755)
        for name, code in files.items():
            (Path(folder) / name).write_text(code, encoding="utf-8")
        base = Path(folder) / "tmp"
        base.mkdir()
        if python != [sys.executable]:
            os.chown(base, plain_user.USER, plain_user.USER)
        return subprocess.run(
            [*python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--kaext-strict"]
            + ["--basetemp", str(base / "t"), "--rootdir", folder, folder],
            capture_output=True,
            text=True,
            cwd=folder,
            env=plain_user.clean_env() if python == [sys.executable] else plain_user.env(),
            timeout=600,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def testing_page_runs() -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]] | BaseException]]:
    """Both runs of the page's test files at once: as root, and as uid 65534 under ``kaext testing --``."""
    page = DOCS / "testing.md"
    if not page.exists():
        pytest.skip("not a source checkout")
    import kaext.testing

    reason = kaext.testing.unavailable_reason()
    if reason is not None:
        plain_user.missing(reason)
    files = _test_files(page)
    assert sorted(files) == ["test_http_dead_server.py", "test_redis_dead_server.py"]
    with ThreadPoolExecutor(2) as pool:
        out: dict[str, Future[subprocess.CompletedProcess[str]] | BaseException] = {
            "root": pool.submit(_run_test_files, files, [sys.executable])
        }
        try:
            out["uid 65534"] = pool.submit(_run_test_files, files, plain_user.python(namespace=True))
        except (pytest.skip.Exception, pytest.fail.Exception) as exc:
            out["uid 65534"] = exc
        yield out


@pytest.mark.root
@pytest.mark.skipif(os.environ.get("KAEXT_NO_EXTENSIONS") == "1", reason="the main run covers the testing page")
@pytest.mark.parametrize("user", ["root", "uid 65534"])
def test_the_testing_page_test_files_pass(
    testing_page_runs: dict[str, Future[subprocess.CompletedProcess[str]] | BaseException], user: str
) -> None:
    run = testing_page_runs[user]
    if isinstance(run, BaseException):
        raise run
    proc = run.result()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r"\b7 passed\b", proc.stdout) and "skipped" not in proc.stdout, proc.stdout[-3000:]
