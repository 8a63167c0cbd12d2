"""Name -> implementation tables filled by decorators, so a spec string picks one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def registrar(table: dict[str, T], kind: str) -> Callable[[str], Callable[[T], T]]:
    """A ``@register(name)`` decorator that adds to ``table`` and refuses a name twice."""

    def register(name: str) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            if name in table:
                raise ValueError(f"{kind} {name!r} is already registered")
            table[name] = fn
            return fn

        return deco

    return register
