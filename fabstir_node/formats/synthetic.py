"""Synthetic vector databases that behave like real embeddings.

Uniform random vectors are a poor stand-in: they have no neighbour
structure, so HNSW recall collapses and index builds take 2–3× longer
(engine-notes §2.1–2.2).  :func:`synthetic_records` draws hierarchical
clusters instead — topics, subtopics (documents) within topics, and chunks
within documents — so a vector's nearest neighbour typically has cosine
similarity of about 0.8 while unrelated vectors are near 0.  Metadata looks
like what the SDK stores for a document chunk (~120 bytes, or longer with
``text_chars``).  Everything is vectorised and deterministic for a seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["synthetic_records"]

#: Documents per topic and chunks per document.
SUBTOPICS_PER_TOPIC = 20
CHUNKS_PER_DOCUMENT = 25
#: Spread of documents around their topic and of chunks around their
#: document, relative to a unit topic vector.  Same-document cosine is about
#: (1 + S²) / (1 + S² + C²) ≈ 0.8.
SUBTOPIC_SPREAD = 0.8
CHUNK_SPREAD = 0.64

_FOLDERS = (
    "/research/papers",
    "/research/notes",
    "/legal/contracts",
    "/support/tickets",
    "/product/specs",
    "/archive/2024",
)
_TAGS = ("draft", "final", "review", "public", "internal")
_WORDS = (
    "quantum annealing ledger protocol storage vector index latency market host model token "
    "session contract payment proof chain block cache shard replica query search embedding "
    "cluster topic document chunk archive policy review release design budget roadmap user "
    "account audit signal network portal bridge registry identity key cipher nonce stream"
).split()


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: np.ndarray = matrix / np.maximum(norms, np.float32(1e-12))
    return unit


def synthetic_records(
    n: int, dim: int, seed: int = 0, *, text_chars: int | None = None
) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """``(ids, vectors, metadata)`` for ``n`` clustered unit vectors.

    ``vectors`` is float32 ``(n, dim)`` with rows of norm 1.  Record *i*
    belongs to document ``i // 25`` (consecutive records are chunks of one
    document) and documents to topics in groups of 20.  ``metadata[i]`` has
    ``source``, ``folderPath`` (one of six folders, by topic), ``chunkIndex``,
    ``tag`` and ``title``; with ``text_chars`` also a ``text`` of exactly that
    many characters.
    """
    if n < 0 or dim < 1:
        raise ValueError("n must be >= 0 and dim >= 1")
    rng = np.random.default_rng(seed)
    documents = -(-n // CHUNKS_PER_DOCUMENT)
    topics = max(1, -(-documents // SUBTOPICS_PER_TOPIC))
    scale = np.float32(1 / np.sqrt(dim))

    topic_vectors = rng.standard_normal((topics, dim), dtype=np.float32) * scale
    topic_of_document = np.arange(documents) // SUBTOPICS_PER_TOPIC
    document_vectors = topic_vectors[topic_of_document] + np.float32(SUBTOPIC_SPREAD) * scale * (
        rng.standard_normal((documents, dim), dtype=np.float32)
    )
    document_of = np.arange(n) // CHUNKS_PER_DOCUMENT
    vectors = document_vectors[document_of]
    vectors += np.float32(CHUNK_SPREAD) * scale * rng.standard_normal((n, dim), dtype=np.float32)
    vectors = _unit_rows(vectors).astype(np.float32, copy=False)

    chunk_index = np.arange(n) % CHUNKS_PER_DOCUMENT
    tags = rng.integers(0, len(_TAGS), size=n)
    title_words = rng.integers(0, len(_WORDS), size=(documents, 2))
    ids = [f"doc-{d:06d}-{c:03d}" for d, c in zip(document_of.tolist(), chunk_index.tolist())]

    texts: list[str] | None = None
    if text_chars:
        per_record = text_chars // 4 + 2  # words are at least 3 letters plus a space
        words = rng.integers(0, len(_WORDS), size=(n, per_record))
        texts = [" ".join(_WORDS[w] for w in row)[:text_chars] for row in words.tolist()]

    metadata: list[dict[str, Any]] = []
    folders = [_FOLDERS[t % len(_FOLDERS)] for t in range(topics)]
    for i, (doc, chunk, tag) in enumerate(zip(document_of.tolist(), chunk_index.tolist(), tags.tolist())):
        folder = folders[doc // SUBTOPICS_PER_TOPIC]
        first, second = title_words[doc]
        entry: dict[str, Any] = {
            "source": f"{folder[1:]}/doc-{doc:06d}.pdf",
            "folderPath": folder,
            "chunkIndex": chunk,
            "tag": _TAGS[tag],
            "title": f"{_WORDS[first].title()} {_WORDS[second]} notes, part {chunk + 1}",
        }
        if texts is not None:
            entry["text"] = texts[i]
        metadata.append(entry)
    return ids, vectors, metadata
