"""Every OS family is complete: its facts, kernel model, reference data and docs title agree.

An OS family lives in five places: ``kaext._platform`` (its knob specs and per-family
facts), ``tests/data/platform_facts.json`` (the expected values from its source, and the
``families`` section that ties the rest together), ``tests/data/reference.json`` (its
headers' option numbers), ``tests/support/kernel_model`` (its kernel's behaviour) and the
platforms page (``docs/_ext/kaext_tables.py``, its title).  Adding a family, a
``sys.platform`` string, a knob table or a model to one of them and forgetting another
fails here, naming what is missing (CONTRIBUTING.md, "Adding an OS fact or family").
"""

from __future__ import annotations

import ast
import json

import families
import kernel_model
import pytest
from paths import DATA, ROOT

from kaext import _platform

pytestmark = pytest.mark.one_implementation

FAMILIES = families.FAMILIES
KNOB_FACTS: dict[str, object] = families.FACTS["knobs"]
HEADERS: dict[str, object] = json.loads((DATA / "reference.json").read_text())["constants"]
TABLES_EXT = ROOT / "docs" / "_ext" / "kaext_tables.py"


def _docs_dict(name: str) -> dict[str, str]:
    """A module-level dict literal of docs/_ext/kaext_tables.py (read, not imported: no Sphinx needed)."""
    if not TABLES_EXT.is_file():
        pytest.skip("not a source checkout (tests run from an installed wheel): the docs are not here")
    for node in ast.parse(TABLES_EXT.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value: dict[str, str] = ast.literal_eval(node.value)
            return value
    raise AssertionError(f"{name} not found in {TABLES_EXT}")


def _per_family_dicts() -> dict[str, dict[str, object]]:
    """Every module-level dict of _platform keyed by family names (e.g. UNSUPPORTED, KERNEL_MAY_REFUSE)."""
    known = set(FAMILIES)
    return {
        name: value
        for name, value in vars(_platform).items()
        if name.isupper() and isinstance(value, dict) and value and set(value) & known
    }


def test_the_families_are_platforms_families() -> None:
    """One entry per family _platform knows (FAMILY_SPECS, and "other": nothing known)."""
    assert set(FAMILIES) == set(_platform.FAMILY_SPECS) | {"other"}


@pytest.mark.parametrize("name", sorted(_per_family_dicts()))
def test_per_family_facts_name_only_known_families(name: str) -> None:
    """A per-family fact under a family name nothing else knows (a typo, a family half-added)."""
    stray = set(_per_family_dicts()[name]) - set(FAMILIES)
    assert not stray, f"_platform.{name} names families not in platform_facts.json's families: {sorted(stray)}"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_platform_string_is_its_family(family: str) -> None:
    for platform in FAMILIES[family]["platforms"]:
        assert _platform._family(platform) == family, platform


@pytest.mark.parametrize("family", sorted(_platform.FAMILY_SPECS))
def test_a_knob_a_family_lacks_has_a_reason(family: str) -> None:
    """The ENOPROTOOPT message names why, per family (UNSUPPORTED), for every knob it lacks."""
    for knob in _platform.KNOBS:
        if knob not in _platform.FAMILY_SPECS[family]:
            assert knob in _platform.UNSUPPORTED.get(family, {}), (family, knob)


def test_every_knob_table_of_the_facts_belongs_to_one_family() -> None:
    claimed = [key for entry in FAMILIES.values() for key in entry["facts"]]
    assert len(claimed) == len(set(claimed)), claimed
    assert set(claimed) == set(KNOB_FACTS), "platform_facts.json: knob tables and families' 'facts' differ"
    for family, entry in FAMILIES.items():
        if family != "other":
            assert entry["facts"], f"{family}: no knob table in platform_facts.json"


def test_every_header_set_belongs_to_one_family() -> None:
    claimed = [key for entry in FAMILIES.values() for key in entry["headers"]]
    assert len(claimed) == len(set(claimed)), claimed
    assert set(claimed) == set(HEADERS), "reference.json: header sets and families' 'headers' differ"
    for family in _platform.FAMILY_SPECS:
        assert FAMILIES[family]["headers"], f"{family}: no headers in reference.json"


def test_every_model_belongs_to_its_family() -> None:
    claimed = [name for entry in FAMILIES.values() for name in entry["models"]]
    assert len(claimed) == len(set(claimed)), claimed
    assert set(claimed) == set(kernel_model.MODELS), "kernel models and families' 'models' differ"
    for family, entry in FAMILIES.items():
        assert entry["models"], f"{family}: no kernel model"
        for name in entry["models"]:
            model = kernel_model.MODELS[name]()
            assert model.family == family, (name, model.family)
            assert model.platform in entry["platforms"], (name, model.platform)
            assert not model.headers or model.headers in entry["headers"], (name, model.headers)


def test_the_platforms_page_titles_every_family() -> None:
    titles = _docs_dict("FAMILY_TITLES")
    wanted = {family: entry["title"] for family, entry in FAMILIES.items() if entry["title"] is not None}
    assert titles == wanted
    assert set(titles) == set(_platform.FAMILY_SPECS)


def test_a_platform_with_its_own_table_is_complete() -> None:
    """_platform.PLATFORM_SPECS (Cygwin): a sys.platform of a family, a knob table in the facts, a model, a title."""
    titles = _docs_dict("PLATFORM_TITLES")
    assert set(titles) == set(_platform.PLATFORM_SPECS)
    for platform in _platform.PLATFORM_SPECS:
        family = families.platforms()[platform]
        entry = FAMILIES[family]
        assert any(how.get("platform") == platform for how in entry["facts"].values()), platform
        assert any(kernel_model.MODELS[name]().platform == platform for name in entry["models"]), platform
