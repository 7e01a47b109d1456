"""Text similarity for the duplicate and leakage checks: word tokens, n-grams, MinHash with LSH."""

# Shared by the validation checks and the dataset builder, so the builder drops exactly what the
# checks would flag. Hashes are crc32 of the shingle text, not Python's per-process `hash()`, so
# the same data gives the same report in every process.

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")
SHINGLE_SIZE = 3
NUM_PERMUTATIONS = 64
# 8 bands of 8 rows: pairs at Jaccard 0.95 share a band with probability 0.9998, pairs below
# about 0.77 rarely do, so few candidate pairs need an exact check.
BANDS = 8
# Within one LSH bucket a row is compared with at most this many earlier rows: enough to find a
# near duplicate of anything, bounded when thousands of templated rows land in one bucket.
MAX_COMPARISONS = 32
_PRIME = (1 << 31) - 1


def tokens(text: str) -> list[str]:
    """Lowercase alphanumeric runs: punctuation and JSON syntax do not count as content."""
    return _TOKEN.findall(text.lower())


def ngrams(words: Sequence[str], n: int) -> set[str]:
    """The word n-grams of a text; a text shorter than n is its own single n-gram."""
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def shingle_hashes(text: str, size: int = SHINGLE_SIZE) -> np.ndarray:
    grams = ngrams(tokens(text), size) or {""}
    return np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint64, count=len(grams))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return inter / union if union else 1.0


def minhash_signatures(shingles: list[np.ndarray], seed: int = 1) -> np.ndarray:
    """(rows, NUM_PERMUTATIONS) MinHash signatures, computed over all rows at once per permutation."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, NUM_PERMUTATIONS, dtype=np.uint64)
    b = rng.integers(0, _PRIME, NUM_PERMUTATIONS, dtype=np.uint64)
    lengths = np.fromiter((s.size for s in shingles), dtype=np.int64, count=len(shingles))
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    flat = np.concatenate(shingles) if shingles else np.empty(0, dtype=np.uint64)
    signatures = np.empty((len(shingles), NUM_PERMUTATIONS), dtype=np.uint64)
    for k in range(NUM_PERMUTATIONS):
        values = (a[k] * flat + b[k]) % _PRIME
        signatures[:, k] = np.minimum.reduceat(values, offsets) if flat.size else 0
    return signatures


def near_duplicates(
    texts: Sequence[str], threshold: float, skip: Iterable[int] = ()
) -> dict[int, int]:
    """Row index -> index of an earlier row whose shingle Jaccard is at least `threshold`.

    Rows in `skip` (exact duplicates, already counted) are neither reported nor matched against.
    """
    skipped = set(skip)
    keep = [i for i in range(len(texts)) if i not in skipped]
    shingles = [np.unique(shingle_hashes(texts[i])) for i in keep]
    if not keep:
        return {}
    signatures = minhash_signatures(shingles)
    # Python sets answer the exact Jaccard of small shingle sets faster than numpy calls.
    sets = [frozenset(s.tolist()) for s in shingles]
    rows_per_band = NUM_PERMUTATIONS // BANDS
    found: dict[int, int] = {}
    for band in range(BANDS):
        chunk = np.ascontiguousarray(
            signatures[:, band * rows_per_band : (band + 1) * rows_per_band]
        )
        keys = chunk.view(np.dtype((np.void, chunk.dtype.itemsize * rows_per_band))).ravel()
        buckets: dict[bytes, list[int]] = {}
        for position, key in enumerate(keys.tolist()):
            members = buckets.setdefault(key, [])
            row = keep[position]
            if row not in found:
                for earlier in members[-MAX_COMPARISONS:]:
                    a, b = sets[position], sets[earlier]
                    inter = len(a & b)
                    if inter / (len(a) + len(b) - inter) >= threshold:
                        found[row] = keep[earlier]
                        break
            members.append(position)
    return dict(sorted(found.items()))


def ngram_overlap(text: str, reference: set[str], n: int) -> float:
    """Share of the text's word n-grams that occur in `reference` (the golden set's n-grams)."""
    grams = ngrams(tokens(text), n)
    if not grams:
        return 0.0
    return sum(1 for g in grams if g in reference) / len(grams)


def reference_ngrams(texts: Iterable[str], n: int) -> set[str]:
    out: set[str] = set()
    for text in texts:
        out |= ngrams(tokens(text), n)
    return out
