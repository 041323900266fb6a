"""Run by every Python interpreter that ``python -m kaext.run`` starts (its directory leads PYTHONPATH).

It injects the policy named by ``KAEXT_RUN_POLICY`` (``KAEXT_RUN_ACCEPTED=1``: accepted
sockets too; ``KAEXT_RUN_FORCE=1``: the policy wins over the program's setsockopt),
takes its own directory off ``sys.path`` again, and then runs the
``sitecustomize`` that would have run without kaext, if there is one.  A policy that
cannot be injected (an interpreter that cannot import kaext) is one line on stderr;
the program runs anyway.  A warning about the policy is not repeated here: kaext.run
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
        sys.stderr.write(f"kaext.run: policy not injected into {sys.executable}: {type(exc).__name__}: {exc}\n")


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
