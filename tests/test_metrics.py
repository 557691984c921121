"""Map-comparison metrics: Kendall tau-b and Spearman equal scipy (ties, zeros, constant maps), top-k
intersection on hand cases and a NumPy reference, mass centre, torchmetrics classes = functional mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustxai.metrics import KendallTau, MassCenterShift, SpearmanCorrelation, TopKIntersection
from robustxai.metrics.functional import (average_ranks, count_inversions, kendall_tau, mass_center,
                                          mass_center_shift, spearman, topk_indices, topk_intersection)

scipy_stats = pytest.importorskip("scipy.stats")

pytestmark = pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning",
                                        "ignore:One or more sample arguments is too small")


def scipy_rows(fn, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a, b = a.reshape(len(a), -1).double().numpy(), b.reshape(len(b), -1).double().numpy()
    return np.array([fn(a[i], b[i]).statistic for i in range(len(a))], dtype=np.float64)


def kendall_ref(a, b):
    return scipy_rows(lambda u, v: scipy_stats.kendalltau(u, v, variant="b"), a, b)


def spearman_ref(a, b):
    return scipy_rows(scipy_stats.spearmanr, a, b)


def assert_matches(ours: torch.Tensor, ref: np.ndarray, atol: float) -> None:
    ours = ours.double().numpy()
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=atol, equal_nan=True)


def mnist_like_ig_maps(n: int, side: int, seed: int) -> torch.Tensor:
    """Channel-summed |IG|-like maps: ~80% exact zeros (black background), the rest continuous."""
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, side, side, generator=g, dtype=torch.float64) ** 3
    return values * (torch.rand(n, side, side, generator=g) < 0.2)


# ----------------------------------------------------------------------------- Kendall / Spearman

@pytest.mark.parametrize("kind", ["continuous", "quantised", "mnist_zeros", "one_sided_ties"])
def test_rank_correlations_equal_scipy(kind):
    g = torch.Generator().manual_seed(0)
    if kind == "continuous":
        a = torch.randn(6, 28, 28, generator=g, dtype=torch.float64)
        b = a + torch.randn(6, 28, 28, generator=g, dtype=torch.float64)
    elif kind == "quantised":
        a = torch.randint(0, 5, (6, 28, 28), generator=g).double()
        b = (a + torch.randint(-2, 3, (6, 28, 28), generator=g)).clamp(0, 4)
    elif kind == "mnist_zeros":
        a, b = mnist_like_ig_maps(6, 28, 1), mnist_like_ig_maps(6, 28, 2)
        b[:3] = a[:3] * (1 + 0.1 * torch.rand(3, 28, 28, generator=g, dtype=torch.float64))
    else:
        a = torch.randn(6, 100, generator=g, dtype=torch.float64)
        b = torch.randint(0, 2, (6, 100), generator=g).double()
    assert_matches(kendall_tau(a, b), kendall_ref(a, b), atol=1e-12)
    assert_matches(spearman(a, b), spearman_ref(a, b), atol=1e-12)
    assert_matches(kendall_tau(b, a), kendall_ref(b, a), atol=1e-12)


def test_rank_correlations_on_16384_pixel_maps_equal_scipy():
    a, b = mnist_like_ig_maps(2, 128, 3).float(), mnist_like_ig_maps(2, 128, 4).float()
    b[0] = a[0] + 0.01 * torch.rand(128, 128) * (a[0] > 0)
    assert_matches(kendall_tau(a, b), kendall_ref(a, b), atol=1e-6)  # float32 result
    assert_matches(spearman(a, b), spearman_ref(a, b), atol=1e-6)


def test_float32_maps_give_float32_results_float64_give_float64():
    a, b = torch.rand(3, 10), torch.rand(3, 10)
    assert kendall_tau(a, b).dtype == torch.float32 and spearman(a, b).dtype == torch.float32
    assert kendall_tau(a.double(), b.double()).dtype == torch.float64


def test_integer_maps_are_ranked_exactly():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 4, (3, 50), generator=g), torch.randint(0, 4, (3, 50), generator=g)
    assert_matches(kendall_tau(a, b), kendall_ref(a, b), atol=1e-6)
    assert_matches(spearman(a, b), spearman_ref(a, b), atol=1e-6)


def test_constant_maps_and_tiny_maps_give_nan_like_scipy():
    a = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    assert torch.isnan(kendall_tau(a, b)).all() and torch.isnan(spearman(a, b)).all()
    assert np.isnan(kendall_ref(a, b)).all() and np.isnan(spearman_ref(a, b)).all()
    assert torch.isnan(kendall_tau(torch.ones(2, 1), torch.ones(2, 1))).all()  # D = 1


def test_nan_in_a_map_gives_nan_for_that_pair_only(backend):
    """A NaN in a or in b, in either float width and at any position, makes that pair's value NaN only."""
    for dtype in (torch.float32, torch.float64):
        a, b = torch.rand(4, 20, dtype=dtype), torch.rand(4, 20, dtype=dtype)
        a[0, 3] = b[2, 19] = float("nan")
        for fn in (kendall_tau, spearman):
            out = fn(a, b)
            assert torch.isnan(out).tolist() == [True, False, True, False]
    one = torch.tensor([[float("nan")], [1.0]])
    assert torch.isnan(kendall_tau(one, one)).all()  # D = 1: undefined either way


def test_perfect_and_reversed_order():
    a = torch.arange(10.0).repeat(2, 1)
    assert torch.equal(kendall_tau(a, a), torch.ones(2))
    assert torch.equal(kendall_tau(a, -a), -torch.ones(2))
    torch.testing.assert_close(spearman(a, 2 * a + 1), torch.ones(2))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(2, 70), st.integers(1, 6), st.integers(1, 6),
       st.integers(0, 2**31 - 1))
def test_rank_correlations_equal_scipy_hypothesis(n, d, levels_a, levels_b, seed):
    """Random sizes (not powers of two) and value ranges from all-tied to almost distinct."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, levels_a, (n, d), generator=g).double() * 0.5
    b = torch.randint(0, levels_b, (n, d), generator=g).double() - 1.0
    assert_matches(kendall_tau(a, b), kendall_ref(a, b), atol=1e-12)
    assert_matches(spearman(a, b), spearman_ref(a, b), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=0, max_size=45))
def test_count_inversions_equals_brute_force(values):
    x = torch.tensor([values], dtype=torch.float64).reshape(1, len(values))
    brute = sum(values[i] > values[j] for i in range(len(values)) for j in range(i + 1, len(values)))
    assert count_inversions(x).tolist() == [brute]
    assert count_inversions(x.long()).tolist() == [brute]


def test_average_ranks_equal_scipy_rankdata():
    x = torch.tensor([[3.0, 1.0, 3.0, 0.0, 3.0, 1.0]])
    np.testing.assert_array_equal(average_ranks(x)[0].numpy(), scipy_stats.rankdata(x[0].numpy()))


# ----------------------------------------------------------------------------- top-k intersection

def test_topk_intersection_hand_cases():
    a = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    assert topk_intersection(a, b, k=2).tolist() == [0.0]
    assert topk_intersection(a, b, k=3).tolist() == pytest.approx([1 / 3])  # index 2 shared
    assert topk_intersection(a, b, k=5).tolist() == [1.0]
    assert topk_intersection(a, a, k=1).tolist() == [1.0]


def test_topk_tie_break_is_lowest_index_first():
    maps = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])
    assert topk_indices(maps, 2).tolist() == [[1, 3]]
    assert topk_indices(maps, 4).tolist() == [[1, 3, 5, 0]]
    zeros = torch.zeros(1, 8)
    shifted = torch.zeros(1, 8)
    shifted[0, 7] = 1.0
    assert topk_intersection(zeros, shifted, k=3).tolist() == pytest.approx([2 / 3])  # {0,1,2} vs {7,0,1}


def test_topk_intersection_equals_numpy_reference_on_distinct_values():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 28, 28, generator=g)
    b = a + torch.randn(8, 28, 28, generator=g)
    for k in (1, 10, 100, 784):
        ref = [len(np.intersect1d(np.argsort(a[i].flatten().numpy())[-k:],
                                  np.argsort(b[i].flatten().numpy())[-k:])) / k for i in range(8)]
        np.testing.assert_allclose(topk_intersection(a, b, k).numpy(), ref, rtol=1e-6)


def test_topk_k_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="k must be"):
        topk_intersection(torch.rand(2, 5), torch.rand(2, 5), k=6)
    with pytest.raises(ValueError, match="same shape"):
        topk_intersection(torch.rand(2, 5), torch.rand(2, 6), k=1)


# ----------------------------------------------------------------------------- mass centre

def test_mass_center_hand_cases():
    maps = torch.zeros(3, 4, 5)
    maps[0, 2, 3] = 7.0                        # one hot pixel
    maps[1, 0, 0], maps[1, 3, 4] = 1.0, 1.0   # two equal pixels: midpoint
    # maps[2] all zero: the image centre
    torch.testing.assert_close(mass_center(maps), torch.tensor([[2.0, 3.0], [1.5, 2.0], [1.5, 2.0]]))


def test_mass_center_equals_numpy_reference_and_seed_formula():
    maps = mnist_like_ig_maps(5, 28, 0)
    maps = 784 * maps / maps.sum(dim=(1, 2), keepdim=True)  # RAR normalisation: sums to H*W
    rows, cols = np.mgrid[0:28, 0:28]
    for i in range(5):
        s = maps[i].numpy()
        seed_center = np.array([(s * rows).sum(), (s * cols).sum()]) / (28 * 28)  # seed: divides by H*W
        np.testing.assert_allclose(mass_center(maps)[i].numpy(), seed_center, rtol=1e-10)


def test_mass_center_shift_continuous_and_truncated():
    a, b = torch.zeros(1, 10, 10), torch.zeros(1, 10, 10)
    a[0, 1, 1], a[0, 1, 2] = 1.0, 1.0   # centre (1, 1.5)
    b[0, 4, 5], b[0, 5, 5] = 1.0, 1.0   # centre (4.5, 5)
    torch.testing.assert_close(mass_center_shift(a, b), torch.tensor([np.hypot(3.5, 3.5)], dtype=torch.float32))
    torch.testing.assert_close(mass_center_shift(a, b, truncate=True),
                               torch.tensor([np.hypot(3.0, 4.0)], dtype=torch.float32))  # (1,1) vs (4,5)


def test_mass_center_needs_channel_free_maps():
    with pytest.raises(ValueError, match="channel_sum"):
        mass_center(torch.rand(2, 1, 4, 4))


# ----------------------------------------------------------------------------- torchmetrics classes

@pytest.mark.parametrize("metric, fn", [
    (KendallTau(), kendall_tau), (SpearmanCorrelation(), spearman),
    (TopKIntersection(k=20), lambda a, b: topk_intersection(a, b, 20)),
    (MassCenterShift(), mass_center_shift), (MassCenterShift(truncate=True),
                                             lambda a, b: mass_center_shift(a, b, truncate=True)),
])
def test_metric_classes_equal_functional_mean_over_batches(metric, fn):
    batches = [(mnist_like_ig_maps(n, 12, s), mnist_like_ig_maps(n, 12, s + 100)) for s, n in
               enumerate((5, 3, 1))]
    for a, b in batches:
        metric.update(a, b)
    expected = torch.cat([fn(a, b).double() for a, b in batches]).mean()
    torch.testing.assert_close(metric.compute().double(), expected, rtol=1e-6, atol=1e-7)
    assert metric.count == 9


def test_metric_states_merge_by_sum_as_under_ddp():
    """Two 'ranks' merged with the states' dist_reduce_fx give the mean over all pairs."""
    a, b = mnist_like_ig_maps(6, 10, 0), mnist_like_ig_maps(6, 10, 1)
    rank0, rank1 = KendallTau(), KendallTau()
    rank0.update(a[:4], b[:4])
    rank1.update(a[4:], b[4:])
    rank0.merge_state(rank1)
    torch.testing.assert_close(rank0.compute().double(), kendall_tau(a, b).double().mean(), rtol=1e-6, atol=0)
    assert all(rank0._reductions[name] is not None for name in ("total", "count", "num_nan"))


def test_metric_nan_policy():
    a = torch.rand(3, 16)
    b = torch.rand(3, 16)
    b[1] = 0.5  # constant map: tau undefined
    propagate, omit = KendallTau(), KendallTau(nan_policy="omit")
    propagate.update(a, b)
    omit.update(a, b)
    assert torch.isnan(propagate.compute())
    torch.testing.assert_close(omit.compute(), kendall_tau(a[[0, 2]], b[[0, 2]]).mean())
    assert omit.num_nan == 1 and omit.count == 2
    with pytest.raises(ValueError, match="nan_policy"):
        KendallTau(nan_policy="raise")


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(37))))
def test_permutation_inversions_equals_brute_force(perm):
    from robustxai.metrics.functional import permutation_inversions
    brute = sum(perm[i] > perm[j] for i in range(len(perm)) for j in range(i + 1, len(perm)))
    p = torch.tensor([perm, perm[::-1]])
    assert permutation_inversions(p).tolist() == [brute, len(perm) * (len(perm) - 1) // 2 - brute]
    assert p.tolist() == [perm, perm[::-1]]  # the input is not modified


def test_cpu_row_blocks_give_the_same_values(monkeypatch):
    """The CPU cache blocking (several maps per block, one map per block) changes nothing."""
    import robustxai.metrics.functional as functional
    a, b = mnist_like_ig_maps(7, 12, 5), mnist_like_ig_maps(7, 12, 6)
    whole_k, whole_s = kendall_tau(a, b), spearman(a, b)
    for block in (300, 100):  # 2 maps per block, then 1
        monkeypatch.setattr(functional, "CPU_BLOCK_ELEMENTS", block)
        assert torch.equal(kendall_tau(a, b), whole_k) and torch.equal(spearman(a, b), whole_s)
    assert_matches(whole_k, kendall_ref(a, b), atol=1e-12)


# ----------------------------------------------------------------------------- Kendall: compiled kernel vs eager

from robustxai.metrics import _kendall_kernel  # noqa: E402
from robustxai.metrics.functional import _kendall_counts_rows, _kendall_tau_eager  # noqa: E402

needs_kernel = pytest.mark.skipif(not _kendall_kernel.available(), reason="no C++ compiler: eager path only")


def eager_counts(a: torch.Tensor, b: torch.Tensor) -> list[list[int]]:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return torch.stack(_kendall_counts_rows(a, b), dim=1).tolist()


def kernel_counts(a: torch.Tensor, b: torch.Tensor, threads: int = 1) -> list[list[int]]:
    out = _kendall_kernel.kendall_counts(a.reshape(len(a), -1), b.reshape(len(b), -1), threads=threads)
    assert out is not None and out.dtype == torch.int64 and out.shape[1] == 5
    return out[:, :4].tolist()


@pytest.fixture(params=["kernel", "eager"])
def backend(request, monkeypatch):
    """Run kendall_tau through the compiled kernel (skipped without a compiler) or the eager torch path."""
    if request.param == "kernel":
        if not _kendall_kernel.available():
            pytest.skip("no C++ compiler: eager path only")
    else:
        monkeypatch.setattr(_kendall_kernel, "kendall_counts", lambda *args, **kwargs: None)
    return request.param


@pytest.mark.parametrize("kind", ["continuous", "quantised", "mnist_zeros", "one_sided_ties"])
def test_kendall_both_backends_equal_scipy(kind, backend):
    g = torch.Generator().manual_seed(7)
    if kind == "continuous":
        a = torch.randn(5, 300, generator=g, dtype=torch.float64)
        b = a + torch.randn(5, 300, generator=g, dtype=torch.float64)
    elif kind == "quantised":
        a = torch.randint(0, 5, (5, 300), generator=g).double()
        b = (a + torch.randint(-2, 3, (5, 300), generator=g)).clamp(0, 4)
    elif kind == "mnist_zeros":
        a, b = mnist_like_ig_maps(5, 20, 11), mnist_like_ig_maps(5, 20, 12)
        b[:2] = a[:2] * (1 + 0.1 * torch.rand(2, 20, 20, generator=g, dtype=torch.float64))
    else:
        a = torch.randn(5, 100, generator=g, dtype=torch.float64)
        b = torch.randint(0, 2, (5, 100), generator=g).double()
    for x, y in ((a, b), (b, a), (a.float(), b.float())):
        assert_matches(kendall_tau(x, y), kendall_ref(x, y), atol=1e-12 if x.dtype == torch.float64 else 1e-6)


@needs_kernel
@settings(max_examples=80, deadline=None)
@given(st.integers(1, 5), st.integers(0, 90), st.integers(1, 8), st.integers(1, 8),
       st.sampled_from(["float32", "float64", "int32", "int64", "float16", "uint8", "bool", "mixed"]),
       st.integers(0, 2**31 - 1))
def test_kernel_counts_equal_eager_counts(n, d, levels_a, levels_b, dtype, seed):
    """Every dtype path of the kernel (packed 32-bit keys, 64-bit key pairs, conversions) = the eager counts."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-levels_a, levels_a, (n, d), generator=g)
    b = torch.randint(-levels_b, levels_b, (n, d), generator=g)
    if dtype == "mixed":
        a, b = a.float() * 0.25, b.int()
    elif dtype in ("uint8", "bool"):
        a, b = (a.abs() % (2 if dtype == "bool" else 256)).to(getattr(torch, dtype)), b.abs().to(getattr(torch, dtype))
    elif dtype.startswith("float"):
        a, b = (a * 0.5).to(getattr(torch, dtype)), (b - 0.5).to(getattr(torch, dtype))
    else:
        a, b = a.to(getattr(torch, dtype)), b.to(getattr(torch, dtype))
    ref = eager_counts(a.double(), b.double())
    assert kernel_counts(a, b) == ref
    assert kernel_counts(a, b, threads=3) == ref
    if d >= 2:
        torch.testing.assert_close(kendall_tau(a, b), _kendall_tau_eager(a.reshape(n, -1), b.reshape(n, -1)),
                                   rtol=0, atol=0, equal_nan=True)


@needs_kernel
def test_kernel_equals_eager_bit_for_bit_on_benchmark_like_maps(monkeypatch):
    """Tie-heavy and distinct float32 maps over several blocks and threads: identical tau values."""
    monkeypatch.setattr(_kendall_kernel, "MIN_ELEMENTS_PER_THREAD", 1)  # use the threads on small data
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    g = torch.Generator().manual_seed(3)
    clean = mnist_like_ig_maps(9, 28, 21).float()
    attacked = clean * (0.5 + torch.rand(9, 28, 28, generator=g)) * (torch.rand(9, 28, 28, generator=g) > 0.03)
    distinct = torch.rand(9, 784, generator=g)
    for a, b in ((clean, attacked), (distinct, distinct + 0.3 * torch.rand(9, 784, generator=g))):
        ours = kendall_tau(a, b)
        assert torch.equal(ours, _kendall_tau_eager(a.reshape(9, -1), b.reshape(9, -1)))
        assert_matches(ours, kendall_ref(a, b), atol=1e-6)


@needs_kernel
def test_kernel_keeps_float64_and_int64_values_apart_that_float32_would_merge():
    base = 1.0 + torch.arange(50, dtype=torch.float64) * 1e-12        # equal in float32
    big = 2**60 + torch.arange(50, dtype=torch.int64)                  # equal in float64
    order = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    for a in (base, big):
        a, b = a[None], order[None].to(a.dtype)
        assert kernel_counts(a, b)[0][:3] == [0, 0, 0]  # no ties at all
        assert kernel_counts(a, b) == eager_counts(a, b)
        np.testing.assert_allclose(kendall_tau(a, b).numpy(),
                                   [scipy_stats.kendalltau(np.argsort(np.argsort(a[0].numpy())), b[0].numpy()).statistic],
                                   rtol=0, atol=1e-12 if a.dtype == torch.float64 else 1e-7)  # int64: float32 result
    assert kendall_tau(big[None], big[None].flip(1)).tolist() == [-1.0]


@needs_kernel
def test_kernel_special_values_signed_zero_and_infinities():
    a = torch.tensor([[0.0, -0.0, 1.0, float("inf"), -float("inf"), 2.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 0.5, -0.0, 0.0]])
    assert kernel_counts(a, b) == eager_counts(a, b)
    assert kernel_counts(a, b)[0][0] == 1  # -0.0 and +0.0 tie, as in scipy
    assert_matches(kendall_tau(a, b), kendall_ref(a, b), atol=1e-7)
    assert_matches(kendall_tau(a.double(), b.double()), kendall_ref(a, b), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32, torch.int64])
def test_kendall_edge_shapes(dtype, backend):
    """N = 1, D = 2 (tau is +-1), all ties, one constant map, D = 1 and D = 0 (NaN)."""
    one = torch.tensor([[1, 2]], dtype=dtype)
    assert kendall_tau(one, one).tolist() == [1.0] and kendall_tau(one, one.flip(1)).tolist() == [-1.0]
    ties = torch.zeros(3, 10, dtype=dtype)
    assert torch.isnan(kendall_tau(ties, ties)).all()
    mixed = torch.stack([torch.arange(10, dtype=dtype), torch.zeros(10, dtype=dtype)])
    out = kendall_tau(mixed, torch.arange(10, dtype=dtype).repeat(2, 1))
    assert out[0] == 1.0 and torch.isnan(out[1])
    for d in (0, 1):
        assert torch.isnan(kendall_tau(torch.zeros(2, d, dtype=dtype), torch.zeros(2, d, dtype=dtype))).all()


@needs_kernel
@pytest.mark.parametrize("d", [70_000])
def test_kernel_huge_map_counts_past_int32(d):
    """D = 70,000: more than 2^31 pairs (int64 counts), positions past 16 bits, scipy's value."""
    g = torch.Generator().manual_seed(0)
    a = torch.arange(d, dtype=torch.float32)[None]
    assert kernel_counts(a, a.flip(1)) == [[0, 0, 0, d * (d - 1) // 2]]  # 2.4e9 discordant pairs
    assert kendall_tau(a, -a).tolist() == [-1.0]
    b = torch.randint(0, 1000, (1, d), generator=g).float()
    c = (b + torch.randint(0, 3000, (1, d), generator=g)).float()
    assert kernel_counts(b, c) == eager_counts(b, c)
    assert_matches(kendall_tau(b.double(), c.double()), kendall_ref(b, c), atol=1e-12)


@needs_kernel
def test_kernel_inputs_views_grad_and_unsupported_devices():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 30, generator=g, requires_grad=True)
    b = torch.rand(30, 4, generator=g).T  # not contiguous
    assert kernel_counts(a, b) == eager_counts(a.detach(), b)
    assert _kendall_kernel.kendall_counts(a.detach().to(torch.int64), b) is None  # int64 with float: eager
    assert not _kendall_kernel.supports(torch.empty(2, 3, device="meta"))
    assert not _kendall_kernel.supports(torch.empty(2, 3, dtype=torch.complex64))


def test_kernel_disabled_or_missing_compiler_falls_back_to_eager(monkeypatch, tmp_path):
    a, b = mnist_like_ig_maps(3, 10, 0), mnist_like_ig_maps(3, 10, 1)
    expected = _kendall_tau_eager(a.reshape(3, -1), b.reshape(3, -1))
    for env, compiler in (("0", "c++"), ("1", None)):
        monkeypatch.setattr(_kendall_kernel, "_state", {})
        monkeypatch.setenv("ROBUSTXAI_KENDALL_KERNEL", env)
        monkeypatch.setattr(_kendall_kernel, "find_compiler", lambda c=compiler: c)
        assert not _kendall_kernel.available()
        assert _kendall_kernel.kendall_counts(a, b) is None
        assert torch.equal(kendall_tau(a, b), expected)


@needs_kernel
def test_kernel_build_failure_is_logged_and_falls_back(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(_kendall_kernel, "_state", {})
    monkeypatch.setenv("ROBUSTXAI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_kendall_kernel, "SOURCE", "this is not C++")
    with caplog.at_level("WARNING", logger=_kendall_kernel.__name__):
        assert not _kendall_kernel.available()
    assert "building the compiled kernel failed" in caplog.text
    assert list(tmp_path.glob("*.so")) == []


@needs_kernel
def test_kernel_builds_into_the_cache_dir_and_reuses_it(monkeypatch, tmp_path):
    monkeypatch.setattr(_kendall_kernel, "_state", {})
    monkeypatch.setenv("ROBUSTXAI_CACHE_DIR", str(tmp_path))
    assert _kendall_kernel.available()
    built = list(tmp_path.glob("kendall_kernel_*.so"))
    assert len(built) == 1 and list(tmp_path.iterdir()) == built  # no temporary files left
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(_kendall_kernel, "_state", {})
    assert _kendall_kernel.available() and built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
