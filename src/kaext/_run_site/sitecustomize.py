"""Run by every Python interpreter that ``python -m kaext.run`` starts (its directory leads PYTHONPATH).

It injects the policy named by ``KAEXT_RUN_POLICY`` (``KAEXT_RUN_ACCEPTED=1``: accepted
sockets too; ``KAEXT_RUN_FORCE=1``: the policy wins over the program's setsockopt),
takes its own directory off ``sys.path`` again, and then runs the
``sitecustomize`` that would have run without kaext, if there is one.  A policy that
cannot be injected (an interpreter that cannot import kaext) is one line on stderr,
which says so when the preload library loaded into this interpreter applies the policy
to its connections anyway; the program runs either way.  A warning about the policy is not repeated here: kaext.run
printed it once for the whole process tree.
"""

from __future__ import annotations

import os
import sys


def _inject() -> None:
    spec = os.environ.get("KAEXT_RUN_POLICY")
    if not spec:
        return
    try:
        import warnings

        import kaext

        with warnings.catch_warnings():
            # kaext.run said it once, in one line, for the whole process tree
            warnings.simplefilter("ignore", RuntimeWarning)
            kaext.inject(
                spec,
                accepted=os.environ.get("KAEXT_RUN_ACCEPTED") == "1",
                force=os.environ.get("KAEXT_RUN_FORCE") == "1",
            )
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        if _preloaded():
            sys.stderr.write(
                f"kaext run: {sys.executable} cannot import kaext ({why}): "
                "the preload library applies the policy to its connections instead\n"
            )
        else:
            sys.stderr.write(f"kaext run: policy not injected into {sys.executable}: {why}\n")


def _preloaded() -> bool:
    """Whether kaext.run's preload library (LD_PRELOAD, with its plan) is loaded into this
    process: it then applies the policy to the connections made through the C library,
    Python's included.  Read from the process's own mappings (where there are none to read,
    it is not)."""
    if not os.environ.get("KAEXT_PRELOAD_PLAN"):
        return False
    libraries = [p for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split() if "kaext_preload" in p]
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return any(line.rstrip().endswith(tuple(libraries)) for line in f) if libraries else False
    except OSError:
        return False


def _chain() -> None:
    """Run the user's own sitecustomize, found on sys.path without this directory."""
    import importlib.machinery
    import importlib.util

    here = os.path.realpath(os.path.dirname(__file__))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)  # its errors are reported by site, as without kaext


_inject()
_chain()
