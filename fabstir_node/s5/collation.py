"""An approximation of JavaScript ``localeCompare`` (ICU root collation).

s5.js sorts directory entry names and the top-level keys of stored objects
with ``a.localeCompare(b)``.  Readers must not depend on that order; a writer
that wants byte-identical output must reproduce it -- :mod:`.dirv1` for entry
names, :func:`.cborx.encode_s5` for every file stored like ``fs.put``
(vector-database manifests and chunks included).  Full ICU is not
available here, so this key models the parts that matter for file names:

1. primary: characters compared by class -- whitespace < punctuation <
   symbols (emoji included) < digits < letters (Latin by base letter, then
   other scripts by code point) -- with accents and case ignored;
   punctuation and symbols in ICU's order for ASCII;
2. secondary: accents (unaccented first);
3. tertiary: case (lower case first).

It agrees with s5.js on every name in s5-vectors.json.  It is *not* a full
UCA implementation (no contractions, no expansions such as ``ß``).
"""

from __future__ import annotations

import unicodedata

__all__ = ["locale_sort_key"]

# ICU root order of ASCII punctuation and symbols (all sort before digits).
_ASCII_ORDER = "_-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$"
_ASCII_RANK = {c: i for i, c in enumerate(_ASCII_ORDER)}

_SPACE, _PUNCT, _SYMBOL, _DIGIT, _LATIN, _OTHER = range(6)


def _primary(ch: str) -> tuple[int, int]:
    if ch in _ASCII_RANK:
        return (_PUNCT, _ASCII_RANK[ch])
    category = unicodedata.category(ch)
    if ch.isspace() or category.startswith("Z"):
        return (_SPACE, ord(ch))
    if category.startswith("P"):
        return (_PUNCT, 1000 + ord(ch))
    if category.startswith("S"):
        return (_SYMBOL, ord(ch))
    if category == "Nd":
        return (_DIGIT, unicodedata.digit(ch, 0))
    lower = ch.lower()
    if "a" <= lower <= "z":
        return (_LATIN, ord(lower))
    return (_OTHER, ord(lower[:1] or ch))


def locale_sort_key(text: str) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """A sort key that orders strings the way ``localeCompare`` does (approximately)."""
    primary: list[tuple[int, int]] = []
    secondary: list[int] = []
    tertiary: list[int] = []
    for ch in text:
        decomposed = unicodedata.normalize("NFD", ch)
        base = decomposed[0]
        marks = [c for c in decomposed[1:] if unicodedata.combining(c)]
        primary.append(_primary(base))
        secondary.append(sum(ord(m) for m in marks))
        tertiary.append(1 if base != base.lower() else 0)
    return (primary, secondary, tertiary)
