"""Other projects' own test suites, run plainly and under ``kaext.run --accepted``: any regression?

A maintainer's check, not run in CI (CI runs trio's suite, which ships in its wheel:
``.ci/steps/30-peer-suites.sh`` calls ``--installed trio``).  For each project the
PyPI sdist is downloaded (``pip download --no-binary :all: --no-deps``) into a
temporary directory, the project is installed into the current environment with its
test requirements where it names them, and its suite runs twice: plainly, and as
``python -m kaext.run --policy SPEC --accepted -- python -m pytest ...``.  The sets of
failing test ids (failures and errors, from pytest's JUnit XML) are compared; a test
that fails only under kaext is a regression.  Nothing of theirs is kept.

    python tools/peer_suites.py                     # urllib3 redis anyio httpx websockets
    python tools/peer_suites.py anyio httpx -- -x   # some of them; after --: pytest arguments
    python tools/peer_suites.py --installed trio -- -p trio._tests.pytest_plugin --skip-optional-imports

Exit status: 0 without regressions, 1 with, 2 for a usage or set-up error.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

PROJECTS = ("urllib3", "redis", "anyio", "httpx", "websockets")
#: The policy the suites run under: short enough to be visible, long enough never to fire.
POLICY = "30s:5s:3 user_timeout=45s"


@dataclass
class Run:
    label: str
    seconds: float
    tests: int
    failing: set[str]
    returncode: int


def _failing(junit: str) -> tuple[int, set[str]]:
    tests, failing = 0, set()
    if not os.path.exists(junit):
        return 0, failing
    for case in ET.parse(junit).getroot().iter("testcase"):
        tests += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failing.add(f"{case.get('classname', '')}::{case.get('name', '')}")
    return tests, failing


def run_pytest(label: str, pytest_args: list[str], cwd: str, under_kaext: bool, tmp: str) -> Run:
    """Run ``python -m pytest pytest_args`` in ``cwd``, plainly or under kaext.run --accepted."""
    junit = os.path.join(tmp, f"{label}-{'kaext' if under_kaext else 'plain'}.xml")
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *pytest_args]
    if under_kaext:
        argv = [sys.executable, "-m", "kaext.run", "--policy", POLICY, "--accepted", "--", *argv]
    start = time.monotonic()
    interactive = sys.stderr.isatty()
    print(f"{label}: {'under kaext.run --accepted' if under_kaext else 'plainly'} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(
        argv,
        cwd=cwd,
        stdout=None if interactive else subprocess.DEVNULL,
        stderr=None if interactive else subprocess.DEVNULL,
        check=False,
    )
    tests, failing = _failing(junit)
    return Run(label, time.monotonic() - start, tests, failing, proc.returncode)


def compare(plain: Run, kaext: Run) -> list[str]:
    """Print both runs and the regressions (ids failing only under kaext); return them."""
    regressions = sorted(kaext.failing - plain.failing)
    fixed = sorted(plain.failing - kaext.failing)
    print(
        f"{plain.label}: plain {plain.tests} tests, {len(plain.failing)} failing, {plain.seconds:.0f} s; "
        f"under kaext.run --accepted {kaext.tests} tests, {len(kaext.failing)} failing, {kaext.seconds:.0f} s; "
        f"{len(regressions)} regressions"
    )
    if kaext.tests == 0 or plain.tests == 0:
        print(f"{plain.label}: no test results (exit statuses {plain.returncode}, {kaext.returncode})")
        regressions.append(f"{plain.label}: no test results")
    for test_id in regressions:
        print(f"  REGRESSION {test_id}")
    for test_id in fixed:
        print(f"  failing only without kaext (flaky?) {test_id}")
    return regressions


def _sdist(project: str, into: str) -> str:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", into, project],
        check=True,
    )
    found = glob.glob(os.path.join(into, "*.tar.gz"))
    if len(found) != 1:
        raise SystemExit(f"peer_suites: expected one sdist for {project}, found {found}")
    with tarfile.open(found[0]) as tar:
        tar.extractall(into, filter="data")
    os.remove(found[0])
    (root,) = [d for d in glob.glob(os.path.join(into, "*")) if os.path.isdir(d)]
    return root


def _install(root: str) -> None:
    # The project itself (so its tests import this version) and whatever test requirements it names.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", root], check=True)
    for name in ("dev-requirements.txt", "requirements-test.txt", "requirements/test.txt", "test-requirements.txt"):
        path = os.path.join(root, name)
        if os.path.exists(path):
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", path], check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("projects", nargs="*", help=f"PyPI names (default: {' '.join(PROJECTS)})")
    p.add_argument(
        "--installed",
        metavar="PACKAGE",
        help="run the suite an installed package ships (pytest --pyargs PACKAGE), no download",
    )
    p.add_argument("--no-install", action="store_true", help="do not pip install the sdist and its test requirements")
    argv = list(sys.argv[1:] if argv is None else argv)
    # after "--": pytest's arguments (argparse would take them for project names)
    pytest_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    regressions: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kaext-peer-") as tmp:
        if args.installed:
            suite = ["--pyargs", args.installed, *pytest_args]
            plain = run_pytest(args.installed, suite, tmp, False, tmp)
            regressions += compare(plain, run_pytest(args.installed, suite, tmp, True, tmp))
        for project in args.projects or ([] if args.installed else list(PROJECTS)):
            where = tempfile.mkdtemp(dir=tmp)
            try:
                root = _sdist(project, where)
                if not args.no_install:
                    _install(root)
            except (subprocess.CalledProcessError, OSError, ValueError) as exc:
                print(f"{project}: cannot set up its suite: {exc}")
                regressions.append(f"{project}: set-up failed")
                continue
            plain = run_pytest(project, list(pytest_args), root, False, tmp)
            regressions += compare(plain, run_pytest(project, list(pytest_args), root, True, tmp))
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
