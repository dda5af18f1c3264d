"""Near-duplicate texts across all splits at once: MinHash signatures, LSH banding, exact Jaccard check.

The Jaccard similarity of two shingle sets (word unigrams + bigrams) is what the threshold means.
MinHash estimates it and LSH banding proposes candidate pairs; each candidate is then confirmed
with the *exact* Jaccard of the two sets, so estimation error never reaches a finding.

Why the signatures and bands are computed here, vectorised in numpy, rather than with
``datasketch.MinHash.bulk`` + ``MinHashLSH``: both loop over documents in Python. Measured on the
project machine (2 shared cores), 20k conversations took ~3.4 s in ``MinHash.bulk`` (64
permutations, crc32) and ~3.3 s in LSH insert + query: ~35 s per 100k examples before reading or
any other check, against a budget of 60 s for the whole audit. Here the same 20k take ~2 s CPU.
We still take the band layout (bands x rows for the threshold) from ``datasketch.MinHashLSH``.
Identical texts are grouped first (one signature per group), which keeps heavily duplicated
data from filling the buckets with copies. Clusters use a small union-find (scipy, which has
one, is not a smalltune dependency).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

NUM_PERM = 64
MASK32, SHIFT = np.uint64(0xFFFFFFFF), np.uint64(32)
CHUNK = 200_000  # shingles per vectorised step (x NUM_PERM x 8 bytes of memory)
RECALL_WEIGHTS = (0.05, 0.95)  # (false positive, false negative) weights for the band layout
BIG_BUCKET = 50  # larger LSH buckets are compared along a chain, not all pairs (see _bucket_pairs)


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]  # path halving keeps trees flat
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for x in range(len(self.parent)):
            out.setdefault(self.find(x), []).append(x)
        return [g for g in out.values() if len(g) > 1]


def shingle_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each text's word unigrams and bigrams, all texts at once (no sorting).

    Returns ``(flat, offsets)``: text ``i`` owns ``flat[offsets[i]:offsets[i + 1]]``, two entries
    per word (the word, and the bigram it starts; the last word repeats itself), so the slice
    holds exactly the shingle set, with repeats that neither a minimum nor a set cares about.
    """
    vocab: dict[str, int] = {}
    ids, lengths = [], []
    for text in texts:
        words = text.split()
        ids += [vocab.get(w) or vocab.setdefault(w, zlib.crc32(w.encode()) or 1) for w in words]
        lengths.append(len(words))
    w = np.asarray(ids, dtype=np.uint64)
    ends = np.cumsum(lengths, dtype=np.int64) - 1  # last word of each text: its "bigram" is itself (int even when empty)
    nxt = np.r_[w[1:], np.uint64(0)]
    bigrams = (w * np.uint64(0x9E3779B1) + nxt * np.uint64(0x85EBCA77)) & MASK32
    bigrams[ends[np.asarray(lengths) > 0]] = w[ends[np.asarray(lengths) > 0]]
    flat = np.empty(2 * len(w), dtype=np.uint64)
    flat[0::2], flat[1::2] = w, bigrams
    return flat, 2 * np.r_[0, np.cumsum(lengths)]


def signatures(flat: np.ndarray, offsets: np.ndarray, rows: np.ndarray, num_perm: int = NUM_PERM,
               seed: int = 1) -> np.ndarray:
    """MinHash signatures of the sets ``rows`` (all non-empty): per permutation, the set's minimum.

    The permutations are multiply-shift hashes ``(a*h + b) mod 2^64 >> 32`` (a odd): a universal
    family that needs no division, which keeps it several times faster than ``mod p`` in numpy.
    """
    rng = np.random.RandomState(seed)
    a = rng.randint(0, 1 << 62, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.randint(0, 1 << 62, size=num_perm, dtype=np.uint64)
    sig = np.empty((len(rows), num_perm), dtype=np.uint64)
    sizes = offsets[rows + 1] - offsets[rows]
    cuts = np.searchsorted(np.cumsum(sizes), np.arange(CHUNK, sizes.sum() + CHUNK, CHUNK), side="right")
    start = 0
    for end in np.unique(np.r_[np.maximum(cuts, 1), len(rows)]):
        end = max(int(end), start + 1)
        if start >= len(rows):
            break
        end = min(end, len(rows))
        flat_part = np.concatenate([flat[offsets[r]:offsets[r + 1]] for r in rows[start:end].tolist()])
        seg = np.r_[0, np.cumsum(sizes[start:end - 1])]
        # (perm, shingle) layout: the minimum runs along contiguous memory
        phv = (a[:, None] * flat_part[None, :] + b[:, None]) >> SHIFT  # wraps mod 2^64
        sig[start:end] = np.minimum.reduceat(phv, seg, axis=1).T
        start = end
    return sig


def _bucket_pairs(members: np.ndarray):
    if len(members) <= BIG_BUCKET:
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                yield int(members[x]), int(members[y])
    else:  # a huge bucket (templated data): neighbours and the first member keep clusters connected
        for x in range(1, len(members)):
            yield int(members[0]), int(members[x])
            yield int(members[x - 1]), int(members[x])


def candidate_pairs(sig: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs of rows that agree on all ``rows`` values of at least one band (the LSH candidates)."""
    rng = np.random.RandomState(7)
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        part = sig[:, band * rows:(band + 1) * rows]
        mult = rng.randint(1, 1 << 62, size=rows, dtype=np.uint64) | np.uint64(1)
        keys = (part * mult[None, :]).sum(axis=1)  # wraps mod 2^64: a hash of the band
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, len(keys)])
        for s, n in zip(starts[sizes > 1], sizes[sizes > 1]):
            pairs.update(_bucket_pairs(np.sort(order[s:s + n])))
    return pairs


def _layout(threshold: float, num_perm: int) -> tuple[int, int]:
    from datasketch import MinHashLSH

    # Weighted towards recall: an audit must not miss duplicates, and a false candidate costs one
    # exact check. With 64 permutations at 0.8 this gives 10 bands of 6 rows: a pair at the
    # threshold becomes a candidate with probability 0.95 (the default weights: 0.36).
    # Above ~0.95 datasketch finds no layout; banding only proposes, the exact check decides.
    lsh = MinHashLSH(threshold=min(threshold, 0.95), num_perm=num_perm, weights=RECALL_WEIGHTS)
    return lsh.b, lsh.r


@dataclass
class SimilarityIndex:
    """Texts of every split; ``groups`` hold identical texts, ``pairs`` link similar groups."""

    owner: list[tuple[str, int]]  # global index -> (split name, example index in that split)
    groups: list[list[int]] = field(default_factory=list)  # global indices per unique shingle set
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (group, group, jaccard)

    @classmethod
    def build(cls, texts: dict[str, list[str]], threshold: float) -> "SimilarityIndex":
        """``texts``: split name -> normalised texts.

        >>> index = SimilarityIndex.build({"train": ["when are you open", "when are you open today"]}, 0.6)
        >>> index.clusters("train")
        [[0, 1]]
        """
        owner = [(split, i) for split, items in texts.items() for i in range(len(items))]
        all_texts = [t for items in texts.values() for t in items]
        flat, offsets = shingle_hashes(all_texts)
        by_text: dict[str, list[int]] = {}  # identical texts share one signature
        for x, text in enumerate(all_texts):
            if offsets[x + 1] > offsets[x]:  # a text without words (emoji only, ...) has nothing to compare
                by_text.setdefault(text, []).append(x)
        index = cls(owner, list(by_text.values()))
        if len(index.groups) < 2:
            return index
        reps = np.array([g[0] for g in index.groups])
        sets = lambda g: np.unique(flat[offsets[reps[g]]:offsets[reps[g] + 1]])  # noqa: E731
        bands, rows = _layout(threshold, NUM_PERM)
        for g, h in sorted(candidate_pairs(signatures(flat, offsets, reps), bands, rows)):
            a, b = sets(g), sets(h)
            inter = len(np.intersect1d(a, b, assume_unique=True))
            sim = inter / (len(a) + len(b) - inter)
            if sim >= threshold:
                index.pairs.append((g, h, sim))
        return index

    def _members(self, group: int, split: str) -> list[int]:
        return [self.owner[x][1] for x in self.groups[group] if self.owner[x][0] == split]

    def clusters(self, split: str) -> list[list[int]]:
        """Clusters (example indices, ascending) of similar texts inside one split."""
        n = sum(1 for s, _ in self.owner if s == split)
        uf = UnionFind(n)
        for g in range(len(self.groups)):
            m = self._members(g, split)
            for x in m[1:]:
                uf.union(m[0], x)
        for g, h, _ in self.pairs:
            a, b = self._members(g, split), self._members(h, split)
            if a and b:
                uf.union(a[0], b[0])
        return sorted(uf.groups(), key=lambda c: c[0])

    def matches(self, split: str, other: str) -> dict[int, tuple[int, float]]:
        """For each text of ``split`` that resembles one in ``other``: (index there, jaccard)."""
        best: dict[int, tuple[int, float]] = {}

        def offer(mine: list[int], theirs: list[int], sim: float):
            for i in mine:
                if theirs and (i not in best or best[i][1] < sim):
                    best[i] = (theirs[0], sim)

        for g in range(len(self.groups)):
            offer(self._members(g, split), self._members(g, other), 1.0)
        for g, h, sim in self.pairs:
            offer(self._members(g, split), self._members(h, other), sim)
            offer(self._members(h, split), self._members(g, other), sim)
        return best
