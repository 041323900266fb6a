"""Task runner: one session per CI step, running the very scripts CI runs.

``nox -l`` lists them; ``nox -s lint`` runs one.  CI (``.ci/run``) runs the README test
command and then ``.ci/steps/*.sh`` in order; here each session makes its own venv with the
package and the test extra installed, then runs the same script (tests/documentation/test_docs.py checks
that every step has its session).  Tool versions come from ``.ci/constraints.txt``.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "typing", "lint", "pure", "docs"]
CONSTRAINTS = ("-c", ".ci/constraints.txt")


def _installed(session: nox.Session, extras: str = "test") -> None:
    session.install(*CONSTRAINTS, f".[{extras}]")


def _step(session: nox.Session, script: str) -> None:
    session.run("bash", f".ci/steps/{script}", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The README's test command: the whole suite on the C extension."""
    _installed(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the package and a sample of user code (05-typing.sh)."""
    _installed(session)
    _step(session, "05-typing.sh")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (check and format), cython-lint and the import layers (06-lint.sh)."""
    _installed(session)
    _step(session, "06-lint.sh")


@nox.session
def manifests(session: nox.Session) -> None:
    """The Kubernetes manifests, kubernetes-validate --strict for every minor from 1.30 (06-manifests.sh)."""
    _installed(session)
    _step(session, "06-manifests.sh")


@nox.session
def pure(session: nox.Session) -> None:
    """The suite again on the pure-Python implementation (07-pure-suite.sh)."""
    _installed(session)
    _step(session, "07-pure-suite.sh")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built warning-free and rendered in Chromium (08-docs.sh)."""
    _installed(session, "test,docs")
    _step(session, "08-docs.sh")


@nox.session(name="kernel-model")
def kernel_model(session: nox.Session) -> None:
    """The public-API suite against every per-OS kernel model (pure implementation)."""
    _installed(session)
    _step(session, "09-kernel-model.sh")


@nox.session
def cross(session: nox.Session) -> None:
    """The C shim cross-compiled for Windows and run under wine, other OSes' headers (10-windows-cross.sh)."""
    _installed(session)
    _step(session, "10-windows-cross.sh")


@nox.session
def uml(session: nox.Session) -> None:
    """The kernel-dependent suites under a second kernel, user-mode Linux 6.1 (15-uml.sh; root)."""
    _installed(session)
    _step(session, "15-uml.sh")


@nox.session
def wheels(session: nox.Session) -> None:
    """sdist and wheels built and checked, the suite against them (20-wheels.sh)."""
    _installed(session)
    _step(session, "20-wheels.sh")


@nox.session(name="peer-suites")
def peer_suites(session: nox.Session) -> None:
    """trio's own suite plainly and under kaext.run --accepted (30-peer-suites.sh)."""
    _installed(session)
    _step(session, "30-peer-suites.sh")


@nox.session
def sanitizers(session: nox.Session) -> None:
    """ASan/UBSan build, the leak check and valgrind (40-sanitizers.sh)."""
    _installed(session)
    _step(session, "40-sanitizers.sh")


@nox.session(name="verify-and-bench")
def verify_and_bench(session: nox.Session) -> None:
    """The verifier through its command and the benchmark goals (50-verify-and-bench.sh)."""
    _installed(session)
    _step(session, "50-verify-and-bench.sh")


@nox.session
def nspawn(session: nox.Session) -> None:
    """The exporter unit and the BPFProgram= drop-in booted in systemd-nspawn (60-nspawn.sh; root)."""
    _installed(session)
    _step(session, "60-nspawn.sh")


@nox.session
def podman(session: nox.Session) -> None:
    """A container's connections inspected and enforced from the host; the DaemonSets' commands (61-podman.sh; root)."""
    _installed(session)
    _step(session, "61-podman.sh")
