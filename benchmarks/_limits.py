"""What the benchmark scripts share: the open-files limit their connection holders need."""

from __future__ import annotations

import resource
import sys


def raise_nofile(need: int, script: str) -> None:
    """At least ``need`` open files for this process and the children it starts (they inherit
    the limit); root may raise the hard limit.  Exits naming ``script`` where that cannot be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return
        except (ValueError, OSError):
            sys.exit(f"{script}: needs {need} open files per process, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
