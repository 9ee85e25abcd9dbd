"""Stored rows: the matrix dtypes and unit-length normalisation (no I/O).

A matrix keeps its rows L2-normalised in float32, float16 or bfloat16 (the last as uint16 bit
patterns: numpy has no bfloat16).  :func:`normalise_rows` is the one place rows become unit length;
:func:`normalise_block` does it for one decoded block of a load — in a decode worker process or a
thread (``workers/decode.py``) — together with the block's 8-bit copy, so whatever fills the
database's matrix (``builder.py``) only copies finished rows.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import numkong
import numpy as np

from .quantized import quantize_rows

__all__ = [
    "DType",
    "NormalisedBlock",
    "as_float32",
    "normalise_block",
    "normalise_rows",
    "numpy_dtype",
    "row_scores",
    "to_bfloat16",
]

DType = Literal["f32", "f16", "bf16"]
#: Storage of each dtype; numpy has no bfloat16, so bf16 rows are kept as their bit patterns in uint16.
NUMPY_DTYPES: dict[str, type[np.generic]] = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16}
_BLOCK_ROWS = 4096


def numpy_dtype(dtype: str) -> np.dtype[Any]:
    """The numpy storage dtype of a matrix dtype name (``f32``, ``f16``, ``bf16``); ValueError otherwise."""
    if dtype not in NUMPY_DTYPES:
        raise ValueError(f"dtype must be 'f32', 'f16' or 'bf16', not {dtype!r}")
    return np.dtype(NUMPY_DTYPES[dtype])


def to_bfloat16(values: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float32 ``values``, rounded to nearest, ties to even."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)


def as_float32(rows: np.ndarray) -> np.ndarray:
    """Stored rows of any matrix dtype as float32 values (bf16 bit patterns widened exactly)."""
    rows = np.asarray(rows)
    if rows.dtype == np.uint16:
        return (rows.astype(np.uint32) << 16).view(np.float32)
    if rows.dtype == np.float16 and rows.size:
        return np.asarray(numkong.astype(rows, "float32"))  # exact, and SIMD: numpy's cast is scalar (~4x slower)
    return rows.astype(np.float32, copy=False)


def row_scores(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """float32 dot products of each of ``rows`` (any float dtype, bf16 bits widened) with a float32
    ``query``, on the calling thread (numkong's kernel).

    Not ``rows @ query``: numpy hands a product of more than ~9,000 numbers to a multi-threaded BLAS,
    whose threads, woken for each small product while the event loop and clients share the two cores,
    stalled about one search in fifty by 5-15 ms in the daemon (2026-12-06, py-spy).
    """
    block = np.ascontiguousarray(as_float32(rows), np.float32)
    if len(block) == 0:
        return np.empty(0, np.float32)
    packed = numkong.dots_pack(np.ascontiguousarray(query, np.float32)[None])
    return np.asarray(numkong.dots_packed(block, packed)).reshape(-1).astype(np.float32)


def _as_stored(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """Float ``values`` ready to assign into rows of ``dtype`` (bf16: rounded bit patterns)."""
    return to_bfloat16(np.asarray(values, np.float32)) if dtype == np.uint16 else values


def _fast_half(block: np.ndarray, target: np.ndarray, norms: np.ndarray, tiny: np.ndarray) -> bool:
    """Whether float32 rows can be scaled in float32 into float16 ``target`` (every norm moderate)."""
    return bool(
        target.dtype == np.float16 and block.dtype == np.float32 and target.flags.c_contiguous
        and not tiny.any() and len(norms) and np.nanmax(np.where(np.isfinite(norms), norms, 0.0)) < 1e30
    )


def normalise_rows(src: np.ndarray, out: np.ndarray) -> int:
    """Write the unit-length rows of ``src`` into ``out`` (may be ``src``), block by block.

    Rows that are all zero or hold a non-finite value become zero rows (score 0).
    Returns their number.  Norms are summed in float64, so no finite input under- or overflows.
    """
    degenerate = 0
    for start in range(0, len(src), _BLOCK_ROWS):
        block = src[start : start + _BLOCK_ROWS]
        if block.dtype != np.float32:  # scale by the row's peak so float64 squares cannot under/overflow
            block = np.asarray(block, dtype=np.float64)
            peak = np.abs(block).max(axis=1, initial=0.0)
            block = block / np.where((peak > 0) & np.isfinite(peak), peak, 1.0)[:, None]
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        bad = ~np.isfinite(norms) | (norms == 0.0)
        tiny = ~bad & (norms < 1e-30)  # 1/norm would overflow float32
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=~(bad | tiny))
        small = np.asarray(block[tiny], dtype=np.float64) if tiny.any() else None  # before out overwrites src
        target = out[start : start + _BLOCK_ROWS]
        with np.errstate(invalid="ignore", over="ignore"):
            if target.dtype == np.uint16:  # bf16: via float32, then rounded to the bit pattern
                product = np.multiply(block, scale[:, None], dtype=np.float32, casting="unsafe")
                target[...] = _as_stored(product, target.dtype)
            elif _fast_half(block, target, norms, tiny):
                # a float32 product, then numkong's SIMD cast (numpy's float16 cast is scalar, ~20x slower):
                # within one float16 rounding of the float64 product (1 ulp apart in ~0.01 % of values)
                product = np.multiply(block, scale.astype(np.float32)[:, None])
                numkong.astype(product, "float16", out=target)
            else:
                np.multiply(block, scale[:, None], out=target, casting="unsafe")  # float64 product, rounded once
        if bad.any():
            target[bad] = 0  # +0.0 in every dtype
            degenerate += int(np.count_nonzero(bad))
        if small is not None:
            unit = small / np.sqrt(np.einsum("ij,ij->i", small, small))[:, None]
            target[tiny] = _as_stored(unit, target.dtype)
    return degenerate


@attrs.frozen(eq=False)
class NormalisedBlock:
    """One block of a load's rows, ready to be copied into the matrix.

    ``rows`` (n x d, the matrix dtype) are unit length; a row whose ``fresh`` flag was False (it is
    taken from a previous version) is zero and not counted in ``degenerate``.  ``codes``/``scales``:
    the 8-bit copy of ``rows`` (``quantized.py``), when one was asked for.
    """

    rows: np.ndarray
    degenerate: int
    codes: np.ndarray | None = None
    scales: np.ndarray | None = None


def normalise_block(
    block: np.ndarray, dtype: str, *, fresh: np.ndarray | None = None, coarse: bool = False
) -> NormalisedBlock:
    """Unit-length rows of ``block`` (float, n x d) in matrix dtype ``dtype``.

    ``fresh`` (n booleans): only these rows are normalised, the others stay zero.  ``coarse``: also
    their 8-bit codes and scales.
    """
    block = np.asarray(block)
    if block.ndim != 2:
        raise ValueError("block must be 2-D")
    target = numpy_dtype(dtype)
    if fresh is None:
        rows = np.empty(block.shape, target)
        degenerate = normalise_rows(block, rows)
    else:
        rows = np.zeros(block.shape, target)
        picked = np.flatnonzero(fresh)
        degenerate = 0
        if len(picked):
            normalised = np.empty((len(picked), block.shape[1]), target)
            degenerate = normalise_rows(block[picked], normalised)
            rows[picked] = normalised
    if not coarse:
        return NormalisedBlock(rows, degenerate)
    codes, scales = quantize_rows(as_float32(rows))
    return NormalisedBlock(rows, degenerate, codes, scales)
