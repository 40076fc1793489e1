"""Exact nearest-codebook search for kernels: ``SymmetricIndex``, brute force over a codebook closed under the 16
symmetries of the square and sign (the classifiers' default), and ``CodebookIndex``, the plain rule's certified
coarse-to-fine search along the curve, described next.

Cosine similarity of a kernel ``w`` to codebook entry ``c_i`` (unit, in basis coordinates) is
``<w - mean(w), B c_i> / |w - mean(w)|``: one (N x k^2) @ (k^2 x M) product. The autoencoder's codebook is a smooth
1-D curve, so neighbouring entries are nearly equal and most of that product is redundant. ``CodebookIndex`` splits
the curve into blocks of ``stride`` entries, each represented by its middle entry ``c_q`` with radius
``r_q = max_{i in block q} |c_i - c_q|``. For a unit kernel ``x``, ``<x, c_i> <= <x, c_q> + r_q`` (Cauchy-Schwarz),
and since a block centre's score is a lower bound on the best, only blocks with ``<x, c_q> + r_q >= max_q <x, c_q>``
can hold the answer. Those candidate blocks are scored exactly (one gathered batch over all kernels of a chunk);
kernels with too many candidates (near-ties everywhere, as for noise) fall back to brute force. The answer is the
brute-force one, up to float rounding and exact ties, at a fraction of the multiply-adds (``work_share``).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["CodebookIndex", "SymmetricIndex"]


class CodebookIndex:
    def __init__(self, codebook: np.ndarray, basis: np.ndarray, stride: int = 16):
        """codebook: (M, k^2 - 1) unit rows in basis coordinates, ordered along the curve; basis: (k^2, k^2 - 1)."""
        b = torch.from_numpy(np.ascontiguousarray(basis, dtype=np.float32))
        entries = torch.from_numpy(np.ascontiguousarray(codebook, dtype=np.float32)) @ b.T   # (M, k^2) pixel space
        self.entries = entries.contiguous()
        self.book = entries.T.contiguous()                                                  # (k^2, M)
        m = len(entries)
        self.stride = max(1, min(stride, m))
        self.block_of = torch.arange(m) // self.stride                                     # block of each entry
        n_blocks = int(self.block_of[-1]) + 1
        starts = torch.arange(n_blocks) * self.stride
        self.centre = torch.minimum(starts + self.stride // 2, torch.tensor(m - 1))         # block centre entries
        self.coarse = self.book[:, self.centre].contiguous()                                # (k^2, blocks)
        dist = (entries - entries[self.centre[self.block_of]]).norm(dim=1)
        self.radius = torch.zeros(n_blocks).scatter_reduce(0, self.block_of, dist, "amax")  # r_q
        self.n_blocks = n_blocks
        self.work_share = 1.0   # multiply-adds of the last ``nearest`` relative to brute force

    @torch.no_grad()
    def brute_force(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index, score) of the best entry for centred kernels ``x`` (n, k^2); the score is the cosine when ``x``
        is unit-norm, as ``nearest`` makes it."""
        score, index = (x @ self.book).max(dim=1)
        return index, score

    @torch.no_grad()
    def nearest(self, flat: torch.Tensor, chunk: int = 4096, coarse_to_fine: bool = True,
                max_blocks: int = 128, group: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
        """Best entry index (n,) and cosine similarity (n,) for raw flattened kernels ``flat`` (n, k^2).

        Kernels are taken ``group`` at a time, so memory and time stay linear in n. Pass 1 (chunks of ``chunk``):
        score the block centres and keep each kernel's candidate blocks; kernels with more than ``max_blocks``
        candidates are searched by brute force there and then. Pass 2: one small product per candidate block over
        the group's kernels that need it (a loop over blocks, not kernels).
        """
        n = len(flat)
        best = torch.zeros(n, dtype=torch.int64)
        similarity = torch.full((n,), float("-inf"))
        work = 0.0
        for start in range(0, n, group):
            x = flat[start:start + group]
            x = x - x.mean(dim=1, keepdim=True)
            x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)
            out = best[start:start + group], similarity[start:start + group]
            if coarse_to_fine and self.stride > 1:
                work += self._search_group(x, *out, chunk, max_blocks)
            else:
                for at in range(0, len(x), chunk):
                    out[0][at:at + chunk], out[1][at:at + chunk] = self.brute_force(x[at:at + chunk])
                work += len(x) * len(self.entries)
        self.work_share = work / max(n * len(self.entries), 1)
        return best, similarity

    def _search_group(self, x, best, similarity, chunk: int, max_blocks: int) -> float:
        """Fill ``best`` / ``similarity`` for unit kernels ``x``; returns the multiply-add count / k^2."""
        rows, blocks, brute = [], [], 0
        for start in range(0, len(x), chunk):
            xc = x[start:start + chunk]
            centre = xc @ self.coarse                                   # exact scores of the block centres
            floor = centre.max(dim=1, keepdim=True).values              # so the best score is at least this
            candidate = centre + self.radius >= floor                   # blocks that may hold something better
            wide = candidate.sum(dim=1) > max_blocks                    # near-ties everywhere (noise)
            if bool(wide.any()):
                at = wide.nonzero().squeeze(1)
                best[start + at], similarity[start + at] = self.brute_force(xc[at])
                brute += len(at)
                candidate[wide] = False
            r, q = candidate.nonzero(as_tuple=True)
            rows.append(r + start)
            blocks.append(q)
        rows, blocks = torch.cat(rows), torch.cat(blocks)
        order = torch.argsort(blocks, stable=True)
        rows, blocks = rows[order], blocks[order]
        counts = torch.bincount(blocks, minlength=self.n_blocks).tolist()
        values, entries = torch.empty(len(rows)), torch.empty(len(rows), dtype=torch.int64)
        at = 0
        for q, count in enumerate(counts):
            if count:
                lo = q * self.stride
                score, where = (x[rows[at:at + count]] @ self.book[:, lo:lo + self.stride]).max(dim=1)
                values[at:at + count], entries[at:at + count] = score, where + lo
                at += count
        similarity.scatter_reduce_(0, rows, values, "amax")
        winner = values == similarity[rows]
        best[rows[winner]] = entries[winner]
        return len(x) * self.n_blocks + brute * len(self.entries) + len(rows) * self.stride


class SymmetricIndex:
    """Exact nearest entry of a codebook closed under the 16 symmetries of ``analysis.core.symmetry``, by brute force.

    The closed codebook is ``{g c_i}`` for base entries ``c_i`` (K, k^2, unit, centred) and the 16 symmetries ``g``.
    The 8 rotations / reflections of every entry are stored side by side (k^2, 8 K); negation costs nothing more,
    since ``<x, -c> = -<x, c>``: the best negated entry is minus the lowest score. One (n x k^2) @ (k^2 x 8 K) product
    and a max / min pass per kernel: 8 K multiply-adds per pixel for 16 K entries, half of a plain search over as
    many entries.
    """

    def __init__(self, entries: np.ndarray, k: int):
        from ..core.symmetry import pixel_permutations
        entries = torch.from_numpy(np.ascontiguousarray(entries, dtype=np.float32))           # (K, k^2)
        perm = torch.from_numpy(pixel_permutations(k)[0][:8].copy())                           # the sign-free 8
        self.k, self.n_base = k, len(entries)
        self.book = torch.cat([entries[:, perm[j]] for j in range(8)]).T.contiguous()         # (k^2, 8 K)

    @torch.no_grad()
    def nearest(self, flat: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(base entry (n,), symmetry (n,) into ``SYMMETRIES``, cosine (n,)) for raw flattened kernels (n, k^2): the
        kernel's best match is ``SYMMETRIES[symmetry] . entries[index]``."""
        n = len(flat)
        index = torch.zeros(n, dtype=torch.int64)
        symmetry = torch.zeros(n, dtype=torch.int64)
        score = torch.zeros(n)
        buffer = torch.empty(min(chunk, n), self.book.shape[1])   # reused: a fresh (c, 8 K) block per chunk page-faults
        for start in range(0, n, chunk):
            x = flat[start:start + chunk]
            x = x - x.mean(dim=1, keepdim=True)
            x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)
            scores = torch.mm(x, self.book, out=buffer[:len(x)])                 # (c, 8 K)
            negative = -scores.amin(dim=1) > scores.amax(dim=1)                  # the best entry is a negated one
            scores.mul_(1 - 2 * negative.unsqueeze(1).to(scores.dtype))          # a full pass beats a masked one
            best, at = scores.max(dim=1)
            rows = slice(start, start + len(x))
            index[rows], score[rows] = at % self.n_base, best
            symmetry[rows] = at // self.n_base + 8 * negative                   # D4 element j, sign: j + 8 s
        return index, symmetry, score
