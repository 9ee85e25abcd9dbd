"""S5 seed phrases: 15 words <-> 16 bytes of entropy (s5.md §3.1).

Words 1-12 carry 10 bits each and word 13 carries 8 (it must be one of the
first 256 words); words 14-15 are a 20-bit BLAKE3 checksum of the entropy.
Only the first three letters of a word count; case and extra whitespace are
ignored, exactly as s5.js ``validatePhrase`` does.

A seed phrase is key material: no function here puts a word of it in an
exception message or a repr.
"""

from __future__ import annotations

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5.cid import blake3_hash
from fabstir_node.s5.wordlist import PREFIX_INDEX, WORDS

__all__ = [
    "ENTROPY_LENGTH",
    "PHRASE_LENGTH",
    "entropy_to_phrase",
    "phrase_from_random",
    "phrase_to_entropy",
]

ENTROPY_LENGTH = 16
SEED_WORDS = 13
CHECKSUM_WORDS = 2
PHRASE_LENGTH = SEED_WORDS + CHECKSUM_WORDS
_LAST_SEED_WORD = SEED_WORDS - 1
#: Anything longer cannot be a phrase; refuse before splitting megabytes.
_MAX_PHRASE_CHARS = 1024


def _invalid(message: str) -> FabstirError:
    return FabstirError(ErrorCode.S5_INVALID_SEED_PHRASE, message)


def _words_to_entropy(words: list[int]) -> bytes:
    value = 0
    for i, word in enumerate(words):
        bits = 8 if i == _LAST_SEED_WORD else 10
        value = (value << bits) | word
    return value.to_bytes(ENTROPY_LENGTH, "big")


def _entropy_to_words(entropy: bytes) -> list[int]:
    value = int.from_bytes(entropy, "big")
    words = [(value >> (118 - 10 * i)) & 0x3FF for i in range(_LAST_SEED_WORD)]
    words.append(value & 0xFF)
    return words


def _checksum_words(entropy: bytes) -> tuple[int, int]:
    h = blake3_hash(entropy)
    first = ((h[0] << 8) | h[1]) >> 6
    second = (((h[1] << 10) & 0xFFFF) + (h[2] << 2)) >> 6
    return first, second


def phrase_to_entropy(phrase: str) -> bytes:
    """The 16 entropy bytes of a valid phrase; ``S5_INVALID_SEED_PHRASE`` otherwise."""
    if not isinstance(phrase, str) or len(phrase) > _MAX_PHRASE_CHARS:
        raise _invalid("seed phrase must be text of 15 words")
    words = phrase.lower().split()
    if len(words) != PHRASE_LENGTH:
        raise _invalid(f"seed phrase must be {PHRASE_LENGTH} words long, was {len(words)}")
    indices = []
    for position, word in enumerate(words, start=1):
        if len(word) < 3:
            raise _invalid(f"seed phrase word {position} is shorter than 3 letters")
        index = PREFIX_INDEX.get(word[:3])
        if index is None:
            raise _invalid(f"seed phrase word {position} is not in the word list")
        if position == SEED_WORDS and index >= 256:
            raise _invalid(f"seed phrase word {position} must be one of the first 256 words")
        indices.append(index)
    entropy = _words_to_entropy(indices[:SEED_WORDS])
    if tuple(indices[SEED_WORDS:]) != _checksum_words(entropy):
        raise _invalid("seed phrase checksum words do not match")
    return entropy


def entropy_to_phrase(entropy: bytes) -> str:
    """The canonical phrase for 16 entropy bytes (s5.js / Fabstir SDK spelling)."""
    entropy = bytes(entropy)
    if len(entropy) != ENTROPY_LENGTH:
        raise _invalid("seed entropy must be 16 bytes")
    words = _entropy_to_words(entropy) + list(_checksum_words(entropy))
    return " ".join(WORDS[i] for i in words)


def phrase_from_random(random_bytes: bytes) -> str:
    """s5.js ``generatePhrase`` given its 26 random bytes (13 big-endian u16 values)."""
    random_bytes = bytes(random_bytes)
    if len(random_bytes) != 2 * SEED_WORDS:
        raise _invalid("generating a phrase takes 26 random bytes")
    words = []
    for i in range(SEED_WORDS):
        value = int.from_bytes(random_bytes[2 * i : 2 * i + 2], "big")
        words.append(value % (256 if i == _LAST_SEED_WORD else 1024))
    return entropy_to_phrase(_words_to_entropy(words))
