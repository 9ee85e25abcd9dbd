"""Mongo-style metadata filters (protocol §3.2 ``metadataFilter``), compiled once.

:func:`compile_filter` turns a client's filter object into a :class:`Filter`
tree, rejecting anything it does not understand with
``FabstirError(INVALID_MESSAGE)``.  A filter answers two questions:

* :meth:`Filter.matches` -- does one metadata object match?  (reference path)
* :meth:`Filter.mask` -- which rows of a store match?  (vectorised path over
  per-field :class:`Column` arrays that the store builds once and caches)

Both paths implement the same semantics and must always agree.

Semantics (MongoDB where sensible):

* ``{"f": v}`` is ``{"f": {"$eq": v}}``; several keys in one object are ANDed;
  ``{}`` matches everything.  Operators: ``$eq $ne $in $nin $gt $gte $lt $lte
  $exists`` on fields, ``$and $or`` (non-empty lists of filters) at any level.
* Equality is type-strict: ``true`` never equals ``1``; ``1`` equals ``1.0``;
  objects are equal when they have the same keys (in any order) with equal
  values; lists are equal element by element.
* Array fields: a predicate matches a list value if it matches the whole list
  (equality only) or *any element* of it -- ``{"tags": "a"}`` matches
  ``{"tags": ["a", "b"]}``, ``{"n": {"$gt": 5}}`` matches ``{"n": [1, 9]}``.
* ``null``: ``{"f": null}`` matches a missing field, a null field, or a list
  containing null.  ``$ne``/``$nin`` are the exact negations of ``$eq``/``$in``,
  so they match when the field is missing.
* ``$gt``/``$gte``/``$lt``/``$lte`` take a finite number or a string and compare
  only numbers with numbers (booleans are not numbers) and strings with strings
  (by code point); any other pairing does not match.
* ``$exists: true`` matches any present field, including null.
* Paths: a key present verbatim in the metadata object wins; otherwise a
  dotted path ``"a.b.c"`` walks nested objects (not into lists).

Limits: nesting deeper than :data:`MAX_DEPTH` or more than :data:`MAX_CLAUSES`
clauses is rejected; numbers in a filter must be finite.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import numpy as np
import orjson

from ..errors import ErrorCode, FabstirError

MAX_DEPTH = 16
MAX_CLAUSES = 1024
_EXACT_INT = 2**53  # ints beyond this do not survive a trip through float64

__all__ = ["MAX_CLAUSES", "MAX_DEPTH", "Column", "ColumnSource", "Filter", "build_columns", "compile_filter"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: The value of a field that is absent from a metadata object.
MISSING: Any = _Missing()


def _bad(message: str) -> FabstirError:
    return FabstirError(ErrorCode.INVALID_MESSAGE, f"metadataFilter: {message}")


def _show(key: str) -> str:
    return repr(key if len(key) <= 40 else key[:40] + "...")


# --- value semantics (the reference path) -------------------------------------


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def resolve(metadata: object, path: str) -> Any:
    """The value at ``path`` in ``metadata``, or :data:`MISSING`."""
    if not isinstance(metadata, dict):
        return MISSING
    value = metadata.get(path, MISSING)
    if value is MISSING and "." in path:
        value = metadata
        for part in path.split("."):
            if not isinstance(value, dict):
                return MISSING
            value = value.get(part, MISSING)
            if value is MISSING:
                return MISSING
    return value


def _same(x: object, v: object) -> bool:
    """Type-strict deep equality; recursion is bounded by the depth of ``v``."""
    if v is None:
        return x is None
    if isinstance(v, bool):
        return isinstance(x, bool) and x == v
    if isinstance(v, (int, float)):
        return _is_number(x) and x == v
    if isinstance(v, str):
        return isinstance(x, str) and x == v
    if isinstance(v, list):
        return isinstance(x, list) and len(x) == len(v) and all(_same(a, b) for a, b in zip(x, v))
    if isinstance(v, dict):
        return (
            isinstance(x, dict) and len(x) == len(v) and all(k in x and _same(x[k], b) for k, b in v.items())
        )
    return False


def _equals(x: object, v: object) -> bool:
    """``x`` (possibly MISSING) matches ``{"$eq": v}``."""
    if x is MISSING:
        return v is None
    if _same(x, v):
        return True
    return isinstance(x, list) and any(_same(e, v) for e in x)


def _compare(op: Callable[[Any, Any], bool], x: object, v: object) -> bool:
    if isinstance(v, str):
        if isinstance(x, str):
            return op(x, v)
    elif _is_number(x):
        return op(x, v)
    if isinstance(x, list):
        return any(_compare(op, e, v) for e in x if not isinstance(e, list))
    return False


# --- columns (the vectorised path) -----------------------------------------------

_K_MISSING, _K_NULL, _K_BOOL, _K_NUMBER, _K_STRING, _K_OTHER = range(6)


@attrs.frozen(eq=False)
class Column:
    """One field's values across all rows of a store, decomposed by type.

    ``kind`` is one of the ``_K_*`` codes per row; ``num`` holds numbers (and
    booleans as 0/1) exactly representable in float64; ``str_code`` is the
    rank of a string value in the sorted ``strings`` (so rank order is string
    order); rows of kind OTHER (lists, objects, huge ints) keep their values in
    ``other_values`` and are evaluated by the reference path.
    """

    kind: np.ndarray
    num: np.ndarray
    str_code: np.ndarray
    strings: list[str]
    other_rows: np.ndarray
    other_values: list[Any]

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> Column:
        n = len(values)
        kinds = np.zeros(n, np.uint8)
        num = np.full(n, np.nan)
        codes = np.full(n, -1, np.int32)
        str_rows: list[int] = []
        str_vals: list[str] = []
        other_rows: list[int] = []
        other_values: list[Any] = []
        for i, x in enumerate(values):
            if x is MISSING:
                continue
            if x is None:
                kinds[i] = _K_NULL
            elif isinstance(x, bool):
                kinds[i] = _K_BOOL
                num[i] = float(x)
            elif isinstance(x, str):
                kinds[i] = _K_STRING
                str_rows.append(i)
                str_vals.append(x)
            elif isinstance(x, float) or (isinstance(x, int) and -_EXACT_INT <= x <= _EXACT_INT):
                kinds[i] = _K_NUMBER
                num[i] = x
            else:
                kinds[i] = _K_OTHER
                other_rows.append(i)
                other_values.append(x)
        strings = sorted(set(str_vals))
        if str_rows:
            rank = {s: r for r, s in enumerate(strings)}
            codes[np.asarray(str_rows, np.int64)] = np.fromiter(
                (rank[s] for s in str_vals), np.int32, len(str_vals)
            )
        return cls(kinds, num, codes, strings, np.asarray(other_rows, np.int64), other_values)

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def nbytes(self) -> int:
        """Approximate memory held by the column."""
        text = sum(49 + len(s) for s in self.strings)
        return self.kind.nbytes + self.num.nbytes + self.str_code.nbytes + self.other_rows.nbytes + text

    def _code_range(self, v: str) -> tuple[int, int]:
        return bisect.bisect_left(self.strings, v), bisect.bisect_right(self.strings, v)

    def _number_rows(self) -> np.ndarray:
        return np.flatnonzero(self.kind == _K_NUMBER)

    def _patch(
        self, mask: np.ndarray, test: Callable[[Any], bool], rows: np.ndarray, values: Iterable[Any]
    ) -> None:
        """OR the reference-path result for ``rows`` into ``mask``."""
        if len(rows):
            mask[rows] |= np.fromiter((test(x) for x in values), bool, len(rows))

    def equals_any(self, candidates: Sequence[Any]) -> np.ndarray:
        """Rows whose value matches ``$eq`` for at least one candidate."""
        mask = np.zeros(len(self), bool)
        numbers: list[float] = []
        huge: list[int] = []
        codes: list[int] = []
        for v in candidates:
            if v is None:
                mask |= self.kind <= _K_NULL
            elif isinstance(v, bool):
                mask |= (self.kind == _K_BOOL) & (self.num == float(v))
            elif isinstance(v, str):
                lo, hi = self._code_range(v)
                if lo < hi:
                    codes.append(lo)
            elif isinstance(v, float) or (isinstance(v, int) and -_EXACT_INT <= v <= _EXACT_INT):
                numbers.append(float(v))
            elif isinstance(v, int):
                huge.append(v)
        if numbers:
            mask |= (self.kind == _K_NUMBER) & np.isin(self.num, numbers)
        if codes:
            mask |= np.isin(self.str_code, codes)
        if huge:
            rows = self._number_rows()
            self._patch(mask, lambda x: x in huge, rows, self.num[rows].tolist())
        self._patch(
            mask, lambda x: any(_equals(x, v) for v in candidates), self.other_rows, self.other_values
        )
        return mask

    def compare(self, name: str, v: object) -> np.ndarray:
        """Rows whose value satisfies ``$gt``/``$gte``/``$lt``/``$lte`` against ``v``."""
        op = _COMPARISONS[name]
        mask = np.zeros(len(self), bool)
        if isinstance(v, str):
            # Ranks are in string order: compare ranks against v's insertion points.
            lo, hi = self._code_range(v)
            code = self.str_code
            if name in ("$gt", "$gte"):
                mask = code >= (hi if name == "$gt" else lo)
            else:
                mask = (code >= 0) & (code < (lo if name == "$lt" else hi))
        elif isinstance(v, float) or -_EXACT_INT <= v <= _EXACT_INT:  # type: ignore[operator]
            with np.errstate(invalid="ignore"):
                mask = (self.kind == _K_NUMBER) & op(self.num, float(v))  # type: ignore[arg-type]
        else:
            rows = self._number_rows()
            self._patch(mask, lambda x: op(x, v), rows, self.num[rows].tolist())
        self._patch(mask, lambda x: _compare(op, x, v), self.other_rows, self.other_values)
        return mask

    def exists(self) -> np.ndarray:
        present: np.ndarray = self.kind != _K_MISSING
        return present


_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def build_columns(blobs: Sequence[bytes], paths: Collection[str]) -> dict[str, Column]:
    """Decode every metadata blob once and extract the columns for ``paths``.

    A blob is the orjson encoding of a metadata object; ``b""`` (or anything
    that does not decode to an object) means "no metadata".
    """
    wanted = list(paths)
    values: list[list[Any]] = [[] for _ in wanted]
    for blob in blobs:
        try:
            doc = orjson.loads(blob) if blob else None
        except orjson.JSONDecodeError:
            doc = None
        for path, out in zip(wanted, values):
            out.append(resolve(doc, path))
    return {path: Column.from_values(vals) for path, vals in zip(wanted, values)}


class ColumnSource(Protocol):
    """What :meth:`Filter.mask` needs from a store (``VectorMatrix`` is one)."""

    def __len__(self) -> int: ...

    def columns(self, paths: Collection[str]) -> Mapping[str, Column]: ...


# --- the filter tree ---------------------------------------------------------------


class Filter:
    """A compiled filter.  Immutable; safe to share between threads."""

    __slots__ = ()

    #: The field paths this filter reads.
    paths: frozenset[str] = frozenset()

    @property
    def matches_all(self) -> bool:
        """True for the empty filter ``{}``."""
        return False

    def matches(self, metadata: object) -> bool:
        """Does one metadata object (a dict; anything else counts as ``{}``) match?"""
        raise NotImplementedError

    def mask(self, store: ColumnSource) -> np.ndarray:
        """Boolean array, one entry per row of ``store``: which rows match."""
        return self._evaluate(store.columns(self.paths), len(store))

    def _evaluate(self, columns: Mapping[str, Column], n: int) -> np.ndarray:
        raise NotImplementedError


@attrs.frozen(slots=True)
class _MatchAll(Filter):
    @property
    def matches_all(self) -> bool:
        return True

    def matches(self, metadata: object) -> bool:
        return True

    def _evaluate(self, columns: Mapping[str, Column], n: int) -> np.ndarray:
        return np.ones(n, bool)


@attrs.frozen(slots=True)
class _AllOf(Filter):
    children: tuple[Filter, ...]
    paths: frozenset[str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "paths", frozenset().union(*(c.paths for c in self.children)))

    def matches(self, metadata: object) -> bool:
        return all(c.matches(metadata) for c in self.children)

    def _evaluate(self, columns: Mapping[str, Column], n: int) -> np.ndarray:
        mask = np.ones(n, bool)
        for child in self.children:
            mask &= child._evaluate(columns, n)
        return mask


@attrs.frozen(slots=True)
class _AnyOf(Filter):
    children: tuple[Filter, ...]
    paths: frozenset[str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "paths", frozenset().union(*(c.paths for c in self.children)))

    def matches(self, metadata: object) -> bool:
        return any(c.matches(metadata) for c in self.children)

    def _evaluate(self, columns: Mapping[str, Column], n: int) -> np.ndarray:
        mask = np.zeros(n, bool)
        for child in self.children:
            mask |= child._evaluate(columns, n)
        return mask


@attrs.frozen(slots=True)
class _FieldTest(Filter):
    """One operator applied to one field: ``op`` is "$in", "$nin", "$gt", ... ."""

    path: str
    op: str
    operand: Any
    paths: frozenset[str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "paths", frozenset((self.path,)))

    def matches(self, metadata: object) -> bool:
        x = resolve(metadata, self.path)
        op, v = self.op, self.operand
        if op == "$in":
            return any(_equals(x, c) for c in v)
        if op == "$nin":
            return not any(_equals(x, c) for c in v)
        if op == "$exists":
            return (x is not MISSING) == bool(v)
        return x is not MISSING and _compare(_COMPARISONS[op], x, v)

    def _evaluate(self, columns: Mapping[str, Column], n: int) -> np.ndarray:
        column = columns[self.path]
        op, v = self.op, self.operand
        if op == "$in":
            return column.equals_any(v)
        if op == "$nin":
            return ~column.equals_any(v)
        if op == "$exists":
            return column.exists() if v else ~column.exists()
        return column.compare(op, v)


# --- compilation -------------------------------------------------------------------


@attrs.define
class _Compiler:
    clauses: int = 0

    def count(self) -> None:
        self.clauses += 1
        if self.clauses > MAX_CLAUSES:
            raise _bad(f"more than {MAX_CLAUSES} clauses")

    def document(self, spec: object, depth: int) -> Filter:
        if not isinstance(spec, dict):
            raise _bad("a filter must be an object")
        if depth > MAX_DEPTH:
            raise _bad(f"nested deeper than {MAX_DEPTH} levels")
        parts: list[Filter] = []
        for key, value in spec.items():
            if not isinstance(key, str):
                raise _bad("field names must be strings")
            self.count()
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise _bad(f"{key} must be a non-empty list of filters")
                children = tuple(self.document(item, depth + 1) for item in value)
                parts.append(_AllOf(children) if key == "$and" else _AnyOf(children))
            elif key.startswith("$"):
                raise _bad(f"unknown or misplaced operator {_show(key)}")
            else:
                parts.extend(self.field(key, value, depth + 1))
        if not parts:
            return _MatchAll()
        return parts[0] if len(parts) == 1 else _AllOf(tuple(parts))

    def field(self, path: str, value: object, depth: int) -> list[Filter]:
        if not (isinstance(value, dict) and any(isinstance(k, str) and k.startswith("$") for k in value)):
            return [_FieldTest(path, "$in", (self.literal(value, depth),))]
        tests: list[Filter] = []
        for op, operand in value.items():
            if not (isinstance(op, str) and op.startswith("$")):
                raise _bad(f"field {_show(path)} mixes operators and plain keys")
            self.count()
            if op in ("$eq", "$ne"):
                tests.append(
                    _FieldTest(path, "$in" if op == "$eq" else "$nin", (self.literal(operand, depth),))
                )
            elif op in ("$in", "$nin"):
                if not isinstance(operand, list):
                    raise _bad(f"{op} on {_show(path)} must be a list")
                tests.append(_FieldTest(path, op, tuple(self.literal(v, depth + 1) for v in operand)))
            elif op in _COMPARISONS:
                if not (isinstance(operand, str) or (_is_number(operand) and _finite(operand))):
                    raise _bad(f"{op} on {_show(path)} needs a finite number or a string")
                tests.append(_FieldTest(path, op, operand))
            elif op == "$exists":
                if not isinstance(operand, bool):
                    raise _bad(f"$exists on {_show(path)} must be true or false")
                tests.append(_FieldTest(path, op, operand))
            else:
                raise _bad(f"unknown operator {_show(op)}")
        return tests

    def literal(self, value: object, depth: int) -> object:
        """Check a value to compare against: JSON types only, finite, bounded depth."""
        if depth > MAX_DEPTH:
            raise _bad(f"nested deeper than {MAX_DEPTH} levels")
        if value is None or isinstance(value, (bool, str)):
            return value
        if _is_number(value):
            if not _finite(value):
                raise _bad("numbers must be finite")
            return value
        if isinstance(value, list):
            return [self.literal(v, depth + 1) for v in value]
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise _bad("field names must be strings")
            return {k: self.literal(v, depth + 1) for k, v in value.items()}
        raise _bad(f"unsupported value of type {type(value).__name__}")


def _finite(x: object) -> bool:
    return isinstance(x, int) or (isinstance(x, float) and math.isfinite(x))


def compile_filter(spec: object) -> Filter:
    """Compile a ``metadataFilter`` object; ``{}`` matches everything.

    The caller handles an absent or null ``metadataFilter`` (no filter at all);
    anything that is not an object raises ``FabstirError(INVALID_MESSAGE)``.
    """
    return _Compiler().document(spec, 0)
