"""Attribution-comparison metrics, batched over maps: Kendall tau-b, Spearman, top-k intersection, mass centre.

Every function takes two batches of maps of shape (N, ...) (flattened from dim 1, so (N, H, W)
and (N, D) both work) and returns one value per map pair, shape (N,). Ties are handled exactly
as scipy does (tau-b, average ranks); a map with no ranking information (constant) gives NaN,
as in scipy. Rank statistics are exact in any floating dtype: values are only compared.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from robustxai.metrics import _kendall_kernel

CPU_BLOCK_ELEMENTS = 1 << 16  # map values per block on CPU (cache-sized; see _in_cpu_blocks)


def _flat_pair(a: Tensor, b: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Check that a and b are same-shaped batches of maps and flatten them to (N, D)."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{name}: a and b must be tensors")
    if a.shape != b.shape:
        raise ValueError(f"{name}: a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim < 2:
        raise ValueError(f"{name}: maps must be batched, shape (N, ...), got {tuple(a.shape)}; "
                         f"use a[None] for a single map")
    if a.is_complex() or b.is_complex():
        raise TypeError(f"{name}: complex maps are not supported")
    return a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)


def _result_dtype(a: Tensor) -> torch.dtype:
    """float64 for float64 maps, float32 otherwise."""
    return torch.float64 if a.dtype == torch.float64 else torch.float32


def _has_nan(x: Tensor) -> Tensor:
    return torch.isnan(x).any(dim=1) if x.is_floating_point() else torch.zeros(len(x), dtype=torch.bool,
                                                                              device=x.device)


def _changes(sorted_x: Tensor) -> Tensor:
    """(N, D) mask: True where a sorted row's value differs from its left neighbour (and at 0)."""
    out = torch.ones_like(sorted_x, dtype=torch.bool)
    out[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    return out


def _run_lengths(new_run: Tensor) -> tuple[Tensor, Tensor]:
    """Dense run ids (N, D) and run lengths (N, D; zero past the last run) from a run-start mask."""
    run_id = new_run.cumsum(dim=1) - 1
    lengths = torch.zeros_like(run_id).scatter_add_(1, run_id, torch.ones_like(run_id))
    return run_id, lengths


def _tied_pairs(new_run: Tensor) -> Tensor:
    """Number of tied pairs per row, sum over runs of t(t-1)/2, from the run-start mask of sorted rows."""
    lengths = _run_lengths(new_run)[1]
    return (lengths * (lengths - 1)).sum(dim=1) // 2


def permutation_inversions(perm: Tensor) -> Tensor:
    """Number of pairs i < j with perm[i] > perm[j] for each row of a (N, D) permutation of 0..D-1.

    A most-significant-bit-first radix sort, vectorised over rows and blocks: at the level of bit
    b the row is split into aligned blocks holding the values that share the bits above b (true
    for a permutation after the levels before); within a block, every 1-bit element before a
    0-bit element is an inversion (counted with one cumsum), then a stable partition by bit b
    (one scatter) prepares the next level. log2(D) levels of O(N D) tensor operations.
    """
    n, d = perm.shape
    bits = max(1, (d - 1).bit_length())
    width = 1 << bits
    q = perm.to(torch.long, copy=True)
    if width > d:  # pad with the values d..width-1 at the end: larger than all and last, no inversion
        q = torch.cat([q, torch.arange(d, width, device=q.device).expand(n, width - d)], dim=1)
    total = torch.zeros(n, dtype=torch.long, device=q.device)
    out = torch.empty_like(q)
    size = width
    while size > 1:
        half = size // 2
        blocks = q.view(n, width // size, size)
        bit = (blocks & half).bool()
        ones = bit.cumsum(dim=2)  # 1-bits up to and including each position in its block
        per_block = ones[:, :, -1]
        # sum of `ones` over 0-bit positions = all positions minus the 1-bit ones (1 + 2 + ... + K)
        total += ones.sum(dim=(1, 2)) - (per_block * (per_block + 1)).sum(dim=1) // 2
        j = torch.arange(size, device=q.device)
        # stable partition: a 0 at j goes to j - ones, a 1 goes to half - 1 + ones
        dest = ones.mul(2).add_(half - 1).sub_(j).mul_(bit).sub_(ones).add_(j)
        out.view(n, width // size, size).scatter_(2, dest, blocks)
        q, out = out, q
        size = half
    return total


def count_inversions(x: Tensor) -> Tensor:
    """Number of pairs i < j with x[i] > x[j] (strictly) in each row of a (N, D) tensor, int64 (N,)."""
    order = torch.sort(x, dim=1, stable=True).indices  # ties keep their order: never an inversion
    perm = torch.empty_like(order).scatter_(1, order, torch.arange(x.shape[1], device=x.device).expand_as(order))
    return permutation_inversions(perm)


def _in_cpu_blocks(fn, a: Tensor, b: Tensor) -> Tensor:
    """``fn(a, b)`` on (N, D) rows; on CPU in blocks of about CPU_BLOCK_ELEMENTS values.

    The rank metrics make a dozen passes over int64 copies of their input; on CPU, blocks that
    fit in the cache are 10-20% faster (bench/bench_rank_metrics.py). On GPUs one block is best.
    """
    if a.device.type != "cpu" or a.numel() <= CPU_BLOCK_ELEMENTS:
        return fn(a, b)
    rows = max(1, CPU_BLOCK_ELEMENTS // a.shape[1])
    return torch.cat([fn(a[i:i + rows], b[i:i + rows]) for i in range(0, a.shape[0], rows)])


def kendall_tau(a: Tensor, b: Tensor) -> Tensor:
    """Kendall's tau-b between each pair of maps, equal to ``scipy.stats.kendalltau(a_i, b_i).statistic``.

    Knight's algorithm, batched over maps: the discordant pairs are the inversions of b listed in
    (a, b) order, and tied pairs in a, in b and in both come from run lengths of the sorted keys.
    On the CPU a compiled kernel (:mod:`robustxai.metrics._kendall_kernel`, built on first use with
    the system C++ compiler) does this per map with one radix sort and a Fenwick tree; elsewhere, or
    without a compiler, three torch sorts and :func:`permutation_inversions` do (same values). NaN
    where a map is constant (tau-b undefined), where D < 2, or where a map holds a NaN.
    """
    a, b = _flat_pair(a, b, "kendall_tau")
    counts = _kendall_kernel.kendall_counts(a, b)
    if counts is None:
        return _kendall_tau_eager(a, b)
    *pair_counts, has_nan = counts.unbind(1)
    return _tau_from_counts(pair_counts, a, has_nan.bool())


def _kendall_tau_eager(a: Tensor, b: Tensor) -> Tensor:
    """:func:`kendall_tau` of flat (N, D) maps with torch operations only (any device)."""
    return _in_cpu_blocks(_kendall_tau_rows, a, b)


def _kendall_counts_rows(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Tied pairs in a, in b, in both, and discordant pairs of each (N, D) row pair (int64 each)."""
    a_sorted, order = torch.sort(a, dim=1)                     # any order among ties in a
    b_ba, order_ba = torch.sort(b.gather(1, order), dim=1, stable=True)  # (b, a) order
    a_ab, perm = torch.sort(a_sorted.gather(1, order_ba), dim=1, stable=True)  # (a, b) order
    b_ab = b_ba.gather(1, perm)  # perm[i] = (b, a)-position of the i-th pair in (a, b) order

    a_starts = _changes(a_ab)
    ties_a = _tied_pairs(a_starts)
    ties_b = _tied_pairs(_changes(b_ba))
    ties_ab = _tied_pairs(a_starts | _changes(b_ab))
    return ties_a, ties_b, ties_ab, permutation_inversions(perm)


def _tau_from_counts(counts: Sequence[Tensor], a: Tensor, has_nan: Tensor) -> Tensor:
    """tau-b from the four pair counts of :func:`_kendall_counts_rows`; NaN where undefined or ``has_nan``."""
    ties_a, ties_b, ties_ab, discordant = counts
    d = a.shape[1]
    total = d * (d - 1) // 2
    numerator = (total - ties_a - ties_b + ties_ab - 2 * discordant).double()
    denominator = ((total - ties_a).double() * (total - ties_b).double()).sqrt()
    tau = (numerator / denominator).clamp(-1.0, 1.0)
    undefined = (ties_a == total) | (ties_b == total) | has_nan
    tau = torch.where(undefined, torch.full_like(tau, float("nan")), tau)
    return tau.to(_result_dtype(a))


def _kendall_tau_rows(a: Tensor, b: Tensor) -> Tensor:
    return _tau_from_counts(_kendall_counts_rows(a, b), a, _has_nan(a) | _has_nan(b))


def average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of each row of a (N, D) tensor, ties getting the mean of their ranks (float64)."""
    sorted_x, order = torch.sort(x, dim=1)
    run_id, lengths = _run_lengths(_changes(sorted_x))
    first = lengths.cumsum(dim=1) - lengths  # position of each run's first element
    mean_rank = first.gather(1, run_id).double() + (lengths.gather(1, run_id).double() + 1) / 2
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rho per map pair (Pearson correlation of average ranks), equal to ``scipy.stats.spearmanr``.

    NaN where a map is constant or holds a NaN.
    """
    a, b = _flat_pair(a, b, "spearman")
    return _in_cpu_blocks(_spearman_rows, a, b)


def _spearman_rows(a: Tensor, b: Tensor) -> Tensor:
    ra, rb = average_ranks(a), average_ranks(b)
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    rho = (ra * rb).sum(dim=1) / ((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1)).sqrt()
    rho = rho.clamp(-1.0, 1.0)
    rho = torch.where(_has_nan(a) | _has_nan(b), torch.full_like(rho, float("nan")), rho)
    return rho.to(_result_dtype(a))


def topk_indices(maps: Tensor, k: int) -> Tensor:
    """Indices (into the flattened map) of the k largest entries of each map, largest first.

    Deterministic tie-break: among equal values the lower flat index ranks higher (a stable
    descending sort), unlike ``numpy.argsort(...)[-k:]`` (arbitrary) or ``torch.topk`` (unspecified).
    """
    flat = maps.reshape(maps.shape[0], -1)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= flat.shape[1]:
        raise ValueError(f"k must be an integer in [1, {flat.shape[1]}] (the map size), got {k!r}")
    return torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]


def topk_intersection(a: Tensor, b: Tensor, k: int) -> Tensor:
    """|top-k(a) ∩ top-k(b)| / k per map pair (Ghorbani et al.'s top-k intersection), ties as in :func:`topk_indices`."""
    a, b = _flat_pair(a, b, "topk_intersection")
    top_a, top_b = topk_indices(a, k), topk_indices(b, k)
    in_top_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, top_a, True)
    shared = in_top_a.gather(1, top_b).sum(dim=1)
    return (shared.double() / k).to(_result_dtype(a))


def mass_center(maps: Tensor) -> Tensor:
    """The weighted (row, col) centre of each (H, W) map: sum_ij S_ij (i, j) / sum_ij S_ij, shape (N, 2).

    Meant for non-negative maps. Dividing by the map's sum (not by H*W as the seed code does) is
    the same for RAR-normalised maps and right for any other scale. A map summing to 0 is
    treated as uniform (as :func:`robustxai.attributions.postprocess.normalize_to_size` does):
    its centre is the image centre ((H-1)/2, (W-1)/2).
    """
    if maps.ndim != 3:
        raise ValueError(f"mass_center expects (N, H, W) maps, got shape {tuple(maps.shape)}; "
                         f"sum the channels first (robustxai.attributions.postprocess.channel_sum)")
    n, h, w = maps.shape
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    maps = maps.to(dtype)
    total = maps.sum(dim=(1, 2))
    zero = total == 0
    rows = torch.arange(h, dtype=dtype, device=maps.device)
    cols = torch.arange(w, dtype=dtype, device=maps.device)
    safe = torch.where(zero, torch.ones_like(total), total)
    center = torch.stack([(maps.sum(dim=2) * rows).sum(dim=1) / safe,
                          (maps.sum(dim=1) * cols).sum(dim=1) / safe], dim=1)
    middle = torch.tensor([(h - 1) / 2, (w - 1) / 2], dtype=dtype, device=maps.device)
    return torch.where(zero.unsqueeze(1), middle.expand(n, 2), center)


def mass_center_shift(a: Tensor, b: Tensor, truncate: bool = False) -> Tensor:
    """L2 distance (in pixels) between the mass centres of each pair of (N, H, W) maps, shape (N,).

    ``truncate=True`` reproduces the seed: both centres go through Python's ``int()``
    (``torch.trunc``) before the distance, ||int(c(a)) - int(c(b))||_2. The default keeps the
    centres continuous (and the result differentiable).
    """
    if a.shape != b.shape:
        raise ValueError(f"mass_center_shift: a and b must have the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    ca, cb = mass_center(a), mass_center(b)
    if truncate:
        ca, cb = ca.trunc(), cb.trunc()
    return (ca - cb).norm(dim=1)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson's r per map pair, equal to ``scipy.stats.pearsonr(a_i, b_i).statistic``; NaN for a constant map.

    Computed in float64 from centred maps (no running sums), so large map offsets lose no precision.
    """
    a, b = _flat_pair(a, b, "pearson")
    da = a.double() - a.double().mean(dim=1, keepdim=True)
    db = b.double() - b.double().mean(dim=1, keepdim=True)
    denom = ((da * da).sum(dim=1) * (db * db).sum(dim=1)).sqrt()
    r = ((da * db).sum(dim=1) / denom).clamp(-1.0, 1.0)  # 0 / 0 (a constant map) stays NaN through clamp
    return r.to(_result_dtype(a))
