"""Edit a decoded file in place for the failure tests of the formats."""

from __future__ import annotations

from typing import Any


def set_at(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    """Set ``obj[path[0]][path[1]]...`` to ``value``; ``value=KeyError`` deletes the last key instead."""
    target = obj
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
