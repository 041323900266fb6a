"""Every OS family, once: what the tests know of each, from ``tests/data/platform_facts.json``.

Its ``families`` section names, per ``kaext._platform`` family, the ``sys.platform``
strings of its kernel, its headers' keys in ``tests/data/reference.json``, its knob tables
in ``platform_facts.json`` (each with how it is built from ``_platform``), its kernel
models and its title on the platforms page.  The tests take their per-family tables from
here; ``tests/platforms/test_families.py`` checks that this section, ``_platform``, the
reference data, the kernel models and the docs agree, so a family added to one and
forgotten in another fails there.
"""

from __future__ import annotations

import json
from typing import Any

from paths import DATA

from kaext import _platform

FACTS: dict[str, Any] = json.loads((DATA / "platform_facts.json").read_text())
FAMILIES: dict[str, dict[str, Any]] = FACTS["families"]


def headers(family: str) -> tuple[str, ...]:
    """The keys of ``family``'s headers in reference.json (the first: the family's own)."""
    return tuple(FAMILIES[family]["headers"])


def platforms() -> dict[str, str]:
    """``sys.platform`` string -> the family of its kernel."""
    return {platform: family for family, entry in FAMILIES.items() for platform in entry["platforms"]}


def fact_tables() -> dict[str, tuple[str, dict[str, _platform.KnobSpec]]]:
    """platform_facts.json knob-table key -> (its family, kaext's table for it)."""
    tables: dict[str, tuple[str, dict[str, _platform.KnobSpec]]] = {}
    for family, entry in FAMILIES.items():
        for key, how in entry["facts"].items():
            specs = dict(_platform.specs(family, how.get("release", ""), how.get("platform", "")))
            if how.get("alternatives"):
                for knob, alternatives in _platform.ALTERNATIVES.get(family, {}).items():
                    specs[knob] = alternatives[0]
            for knob in how.get("without", ()):
                del specs[knob]
            tables[key] = (family, specs)
    return tables
