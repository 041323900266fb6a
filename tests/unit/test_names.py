"""Names as a user types them: middlebox names in any case wherever a policy is read, error
messages that speak of the argument that failed, "1 probe", ``Knob``'s repr, ``IMPLEMENTATION``."""

from __future__ import annotations

import pytest

import kaext
from kaext import Policy, adapters, presets, run

NAMES = sorted(presets.MIDDLEBOXES)


def _spellings(name: str) -> list[str]:
    return [name, name.upper(), name.title()]


@pytest.mark.parametrize("name", NAMES)
def test_parse_reads_a_middlebox_name_in_any_case(name: str) -> None:
    expected = Policy.for_idle_timeout(presets.MIDDLEBOXES[name].idle_timeout)
    for spelling in _spellings(name):
        assert Policy.parse(spelling) == expected, spelling
        assert Policy.parse(f"  {spelling} ") == expected, spelling


@pytest.mark.parametrize("name", ["aws-nlb", "azure-lb", "gcp-cloud-nat"])
def test_every_reader_of_a_policy_takes_any_case(name: str) -> None:
    expected = Policy.for_idle_timeout(presets.MIDDLEBOXES[name].idle_timeout)
    for spelling in _spellings(name):
        assert Policy.for_middlebox(spelling) == expected
        assert presets.for_middlebox(spelling) == expected
        assert adapters.as_policy(spelling) == expected
        env = run.environment(spelling, base={})
        assert Policy.parse(env["KAEXT_RUN_POLICY"]) == expected


@pytest.mark.usefixtures("no_injection")
def test_inject_takes_a_middlebox_name_in_any_case() -> None:
    try:
        kaext.inject("AWS-NLB")
        assert kaext.injected() == Policy.for_middlebox("aws-nlb")
    finally:
        kaext.uninject()


def _over_the_top(knob: str) -> str:
    """A whole number of seconds just above ``knob``'s range here."""
    k = kaext.capabilities()[knob]
    per = k.per_second or 1
    return str(k.max // per + 1)


@pytest.mark.parametrize("read", [Policy.parse, adapters.as_policy], ids=["parse", "as_policy"])
def test_a_range_error_says_nothing_of_middleboxes(read: object) -> None:
    if "idle" not in kaext.capabilities():
        pytest.skip("no idle knob here")
    spec = _over_the_top("idle")
    with pytest.raises(ValueError) as info:
        read(spec)  # type: ignore[operator]
    message = str(info.value)
    assert "out of range" in message and kaext.capabilities()["idle"].option in message
    assert "middlebox" not in message


@pytest.mark.parametrize("spec", ["5x:30s:4", "5m:3q", "30m::x", "on user_timeout=1y"])
def test_a_syntax_error_in_a_field_names_the_field_not_middleboxes(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        Policy.parse(spec)
    assert "middlebox" not in str(info.value)


@pytest.mark.parametrize("spec", ["aws-nbl", "nlb", "keepalive"])
def test_a_word_that_is_no_spec_lists_the_middlebox_names(spec: str) -> None:
    for read in (Policy.parse, adapters.as_policy):
        with pytest.raises(ValueError) as info:
            read(spec)
        message = str(info.value)
        assert "middlebox" in message and all(name in message for name in NAMES), message


def test_unknown_middlebox_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        Policy.for_middlebox("aws-nbl")
    assert "aws-nbl" in str(info.value) and all(name in str(info.value) for name in NAMES)


def test_one_probe_is_singular() -> None:
    count = kaext.capabilities().get("count")
    if count is None or count.min != 1:
        pytest.skip("no count knob starting at 1 probe here")
    with pytest.raises(ValueError) as info:
        Policy(count=0)
    message = str(info.value)
    assert f"accepts 1 probe .. {count.max} probes" in message, message
    assert "1 probes" not in message


def test_knob_repr_shows_per_second() -> None:
    for name, knob in kaext.capabilities().items():
        text = repr(knob)
        assert text.startswith("Knob(option=") and text.endswith(f", per_second={knob.per_second!r})"), name
        assert f"unit={knob.unit!r}" in text, name


def test_implementation_is_one_of_two_names() -> None:
    assert kaext.IMPLEMENTATION in ("c", "python")
    assert type(kaext.IMPLEMENTATION) is str
