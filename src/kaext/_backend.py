"""Chooses the implementation: the C extension, or the pure-Python one.

``KAEXT_NO_EXTENSIONS=1`` forces the pure-Python implementation; so does a
Python on which the extension was not built (PyPy, no compiler).
"""

from __future__ import annotations

import os

if os.environ.get("KAEXT_NO_EXTENSIONS", "") not in ("", "0"):
    from ._pure import CONSTANT_SOURCES, CONSTANTS, FD_MAX, IMPLEMENTATION, KNOB_OPTIONS, apply, apply_policy, bind_policy, bind_state, knob_supported, knob_unit, mechanism, read, read_policy, read_state
else:
    try:
        from ._kaext import (
            CONSTANT_SOURCES,
            CONSTANTS,
            FD_MAX,
            IMPLEMENTATION,
            KNOB_OPTIONS,
            apply,
            apply_policy,
            bind_policy,
            bind_state,
            knob_supported,
            knob_unit,
            mechanism,
            read,
            read_policy,
            read_state,
        )
    except ImportError:
        from ._pure import (  # type: ignore[assignment, unused-ignore]
            CONSTANT_SOURCES,
            CONSTANTS,
            FD_MAX,
            IMPLEMENTATION,
            KNOB_OPTIONS,
            apply,
            apply_policy,
            bind_policy,
            bind_state,
            knob_supported,
            knob_unit,
            mechanism,
            read,
            read_policy,
            read_state,
        )

__all__ = [
    "CONSTANTS",
    "CONSTANT_SOURCES",
    "FD_MAX",
    "IMPLEMENTATION",
    "KNOB_OPTIONS",
    "apply",
    "apply_policy",
    "bind_policy",
    "bind_state",
    "knob_supported",
    "knob_unit",
    "mechanism",
    "read",
    "read_policy",
    "read_state",
]
