"""Value classes without dataclasses: equality and repr over a class's named fields.

The launch path avoids importing :mod:`dataclasses` (with :mod:`inspect`, ~5 ms of
every ``appimg run``). A class lists its fields in ``_FIELDS``, in the order its repr
shows them, and gets what a dataclass would give it: :class:`Fields` compares by value
and is unhashable (a mutable dataclass), :class:`FrozenFields` also refuses assignment
and hashes by value (a frozen one). Any layer may import this module.
"""

from __future__ import annotations

from typing import Any


class Fields:
    """``__eq__`` and ``__repr__`` over ``_FIELDS``; unhashable, like a mutable dataclass."""

    __slots__ = ()
    _FIELDS: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__name__}({values})"


class FrozenFields(Fields):
    """:class:`Fields` that refuses assignment and hashes by value (a frozen dataclass).

    ``__init__`` sets fields with :meth:`_set`."""

    __slots__ = ()

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(self._values())
