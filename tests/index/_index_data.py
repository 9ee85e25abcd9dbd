"""Small clustered databases for the persistence and HNSW tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from fabstir_node.engine.matrix import VectorMatrix
from fabstir_node.formats.synthetic import synthetic_records


def make_matrix(n: int = 3000, dim: int = 32, *, dtype: str = "f16", seed: int = 0) -> tuple[VectorMatrix, np.ndarray]:
    """A matrix of ``n`` clustered records (SDK-like metadata) and its float32 source vectors."""
    ids, vectors, metadata = synthetic_records(n, dim, seed)
    matrix = VectorMatrix.from_arrays(ids, vectors.copy(), [orjson.dumps(m) for m in metadata], dtype=dtype)
    return matrix, vectors


def queries(vectors: np.ndarray, count: int = 40, *, seed: int = 7) -> np.ndarray:
    """Queries near stored vectors (cosine ~0.9 to their source), as an SDK would send."""
    rng = np.random.default_rng(seed)
    picks = vectors[rng.integers(0, len(vectors), count)]
    noise = rng.standard_normal(picks.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    out = picks + 0.5 * noise
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def resident_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total
