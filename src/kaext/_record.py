"""A small immutable value type, cheaper to import than dataclasses or typing.NamedTuple.

``import kaext`` stays in the low milliseconds because nothing here pulls in
``dataclasses`` (which imports ``inspect``, ``ast`` and ``dis``) or ``typing``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    _R = TypeVar("_R", bound="Record")


class FrozenError(AttributeError):
    """Raised when code tries to change a field of an immutable kaext value."""


class Record:
    """Fields named in ``_fields``, stored in ``__slots__``; equal, hashable and printable by them."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _init(self, *values: object) -> None:
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined, unused-ignore]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenError(f"{type(self).__name__} is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._values())

    def _asdict(self) -> dict[str, Any]:
        """The fields as a dict, in order."""
        return {name: getattr(self, name) for name in self._fields}

    def _replace(self: _R, **changes: Any) -> _R:
        """A copy with some fields changed."""
        return type(self)(**{**self._asdict(), **changes})
