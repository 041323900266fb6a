"""The ``policy`` argument of the integrations in ``kaext.adapters``: a Policy or a string."""

from __future__ import annotations

import kaext
from kaext.presets import MIDDLEBOXES

__all__ = ["as_policy"]


def as_policy(policy: kaext.Policy | str) -> kaext.Policy:
    """``policy`` itself, or the policy a string names.

    A string is first looked up as a middlebox name (``kaext.presets.MIDDLEBOXES``,
    e.g. ``"aws-nlb"`` gives ``Policy.for_middlebox("aws-nlb")``), otherwise parsed
    with ``Policy.parse`` (``"5m:30s:4"``, ``"on"``, ``"2m:10s:6 user_timeout=3m"``).
    Raises TypeError for anything else, ValueError for a bad spec.
    """
    if isinstance(policy, kaext.Policy):
        return policy
    if isinstance(policy, str):
        if policy in MIDDLEBOXES:
            return kaext.Policy.for_middlebox(policy)
        return kaext.Policy.parse(policy)
    raise TypeError(f"policy must be a kaext.Policy or a str, got {type(policy).__name__} {policy!r}")
