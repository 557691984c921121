"""A compiled CPU kernel for Kendall's tau-b counts, built on first use with the system C++ compiler.

One pass per map pair, the maps shared among threads: the (a, b) value pairs are sorted by an LSD
radix sort of one packed 64-bit key per pair (32-bit values: float32, int32 and what converts to
them exactly), b's bytes first, so half way through the pairs are in b order and b is replaced by
its dense rank. In (a, b) order each pair then takes its rank's next b-order position, so the
discordant pairs are the inversions of a permutation, counted with a bitmap of 64-bit words and a
Fenwick tree of word counts (a popcount and a few tree steps per pair). 64-bit values (float64,
int64) take a merge sort of the key pairs and a counting merge sort of b instead. Ties in a, in b
and in both come from run lengths of the sorted keys; the NaN check is part of the key pass.

The shared library is cached under ``$ROBUSTXAI_CACHE_DIR`` (default ``~/.cache/robustxai``),
named by a hash of its source, compiler and flags. Where no compiler is found, the build fails,
or ``ROBUSTXAI_KENDALL_KERNEL=0`` is set, :func:`kendall_counts` returns None and
:func:`robustxai.metrics.functional.kendall_tau` uses its eager torch path (also the GPU path).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

MIN_ELEMENTS_PER_THREAD = 1 << 15  # below this a call stays on one thread (starting one costs ~30 us)

SOURCE = r"""
// Kendall tau-b counts per map pair: tied pairs in a, in b, in both, discordant pairs, and 1 if a value is NaN.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// order-preserving unsigned keys; -0.0 and +0.0 are the same value
inline uint32_t okey(float x) {
  if (x == 0.0f) x = 0.0f;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline uint32_t okey(int32_t x) { return static_cast<uint32_t>(x) ^ 0x80000000u; }
inline uint64_t okey(double x) {
  if (x == 0.0) x = 0.0;
  uint64_t u;
  std::memcpy(&u, &x, 8);
  return (u >> 63) ? ~u : (u | (1ull << 63));
}
inline uint64_t okey(int64_t x) { return static_cast<uint64_t>(x) ^ (1ull << 63); }

template <class T>
inline bool is_nan(T x) { return x != x; }  // false for the integer types

struct Wide {
  uint64_t a, b;
  bool operator<(const Wide& o) const { return a < o.a || (a == o.a && b < o.b); }
};

// number of tied pairs, sum over runs of t (t - 1) / 2, of a sorted sequence
template <class F>
int64_t tied_pairs(int64_t n, F equal_to_previous) {
  int64_t ties = 0, run = 1;
  for (int64_t i = 1; i < n; ++i) {
    if (equal_to_previous(i)) {
      ties += run++;
    } else {
      run = 1;
    }
  }
  return ties;
}

constexpr int64_t RUN = 16;

// stable merge sort of x[0..n) (tmp: n more); returns the number of pairs i < j with x[j] < x[i]
template <class K>
int64_t sort_inversions(K* x, K* tmp, int64_t n) {
  int64_t inv = 0;
  for (int64_t s = 0; s < n; s += RUN) {  // insertion sort of short runs: one shift per inversion
    const int64_t e = std::min(s + RUN, n);
    for (int64_t i = s + 1; i < e; ++i) {
      const K v = x[i];
      int64_t j = i;
      while (j > s && v < x[j - 1]) {
        x[j] = x[j - 1];
        --j;
      }
      inv += i - j;
      x[j] = v;
    }
  }
  K* src = x;
  K* dst = tmp;
  for (int64_t w = RUN; w < n; w *= 2) {
    for (int64_t lo = 0; lo < n; lo += 2 * w) {
      const int64_t mid = std::min(lo + w, n), hi = std::min(lo + 2 * w, n);
      int64_t i = lo, j = mid, k = lo;
      while (i < mid && j < hi) {
        const bool right = src[j] < src[i];  // ties take the left one: not an inversion
        dst[k++] = right ? src[j] : src[i];
        inv += right ? (mid - i) : 0;
        j += right;
        i += !right;
      }
      while (i < mid) dst[k++] = src[i++];
      while (j < hi) dst[k++] = src[j++];
    }
    std::swap(src, dst);
  }
  if (src != x) std::memcpy(x, src, n * sizeof(K));
  return inv;
}

// 64-bit values: merge sort of the (a, b) key pairs, then a counting merge sort of b in that order
template <class T>
void row_wide(const T* a, const T* b, int64_t d, int64_t* out, uint64_t* scratch) {
  Wide* keys = reinterpret_cast<Wide*>(scratch);
  Wide* tmp = keys + d;
  uint64_t* bs = scratch + 4 * d;
  uint64_t* btmp = bs + d;
  bool nan = false;
  for (int64_t i = 0; i < d; ++i) {
    keys[i] = Wide{okey(a[i]), okey(b[i])};
    nan |= is_nan(a[i]) | is_nan(b[i]);
  }
  out[4] = nan;
  sort_inversions(keys, tmp, d);
  out[0] = tied_pairs(d, [&](int64_t i) { return keys[i].a == keys[i - 1].a; });
  out[2] = tied_pairs(d, [&](int64_t i) { return keys[i].a == keys[i - 1].a && keys[i].b == keys[i - 1].b; });
  for (int64_t i = 0; i < d; ++i) bs[i] = keys[i].b;
  out[3] = sort_inversions(bs, btmp, d);
  out[1] = tied_pairs(d, [&](int64_t i) { return bs[i] == bs[i - 1]; });
}

// pairs i < j of the sequence with rank[i] > rank[j]. Each element takes a distinct position in
// 0..d-1: its rank's next free b-order position (`first`, advanced as used), so equal ranks never
// count; the positions taken so far are a bitmap of 64-bit words with a Fenwick tree of word counts.
// A run of equal keys (tied in a and in b) takes consecutive positions: one query for the run
int64_t discordant_pairs(const uint64_t* keys, int64_t d, uint32_t* first, uint64_t* scratch) {
  const uint32_t words = static_cast<uint32_t>((d + 63) >> 6);
  uint64_t* bits = scratch;
  uint32_t* tree = reinterpret_cast<uint32_t*>(bits + words);  // 1-based, words + 1 entries
  std::memset(bits, 0, words * sizeof(uint64_t));
  std::memset(tree, 0, (words + 1) * sizeof(uint32_t));
  int64_t discordant = 0;
  for (int64_t j = 0; j < d;) {
    const uint64_t key = keys[j];
    int64_t e = j + 1;
    while (e < d && keys[e] == key) ++e;
    const uint32_t rank = static_cast<uint32_t>(key), length = static_cast<uint32_t>(e - j);
    uint32_t v = first[rank];
    first[rank] = v + length;
    int64_t below = __builtin_popcountll(bits[v >> 6] & ((1ull << (v & 63)) - 1));  // taken positions < v
    for (uint32_t x = v >> 6; x > 0; x &= x - 1) below += tree[x];
    discordant += static_cast<int64_t>(length) * (j - below);
    for (uint32_t left = length; left > 0;) {  // take positions v .. v + length - 1
      const uint32_t offset = v & 63, take = std::min(left, 64 - offset);
      bits[v >> 6] |= (take == 64 ? ~0ull : (1ull << take) - 1) << offset;
      for (uint32_t x = (v >> 6) + 1; x <= words; x += x & (~x + 1)) tree[x] += take;
      v += take;
      left -= take;
    }
    j = e;
  }
  return discordant;
}

// 32-bit values: LSD radix sort (8-bit digits) of the keys a << 32 | b, b's bytes first; once in
// b order, b is replaced by its dense rank, so the (a, b) order ends with the ranks for the tree
template <class T>
void row_packed(const T* a, const T* b, int64_t d, int64_t* out, uint64_t* scratch) {
  uint64_t* keys = scratch;
  uint64_t* tmp = keys + d;
  uint32_t hist[8][256];
  std::memset(hist, 0, sizeof(hist));
  bool nan = false;
  for (int64_t i = 0; i < d; ++i) {
    const uint64_t k = (static_cast<uint64_t>(okey(a[i])) << 32) | okey(b[i]);
    keys[i] = k;
    nan |= is_nan(a[i]) | is_nan(b[i]);
    for (int r = 0; r < 8; ++r) ++hist[r][(k >> (8 * r)) & 255];
  }
  out[4] = nan;
  uint64_t* src = keys;
  uint64_t* dst = tmp;
  auto pass = [&](int r) {
    const uint32_t* h = hist[r];
    uint32_t pos[256];
    uint32_t sum = 0;
    for (int c = 0; c < 256; ++c) {
      if (h[c] == static_cast<uint32_t>(d)) return;  // one digit value: the order stays
      pos[c] = sum;
      sum += h[c];
    }
    const int shift = 8 * r;
    for (int64_t i = 0; i < d; ++i) {
      const uint64_t k = src[i];
      dst[pos[(k >> shift) & 255]++] = k;
    }
    std::swap(src, dst);
  };
  for (int r = 0; r < 4; ++r) pass(r);
  // b order: b becomes its dense rank, and each rank's first b-order position is kept
  uint32_t* first = reinterpret_cast<uint32_t*>(scratch + 2 * d);
  const uint64_t high = 0xFFFFFFFF00000000ull;
  int64_t ties_b = 0, run = 1;
  uint32_t rank = 0, previous = static_cast<uint32_t>(src[0]);
  src[0] &= high;
  first[0] = 0;
  for (int64_t i = 1; i < d; ++i) {
    const uint32_t current = static_cast<uint32_t>(src[i]);
    if (current == previous) {
      ties_b += run++;
    } else {
      first[++rank] = static_cast<uint32_t>(i);
      run = 1;
      previous = current;
    }
    src[i] = (src[i] & high) | rank;
  }
  for (int r = 4; r < 8; ++r) pass(r);
  int64_t ties_a = 0, ties_ab = 0, run_a = 1, run_ab = 1;  // one pass for the ties in a and in both
  for (int64_t i = 1; i < d; ++i) {
    const uint64_t x = src[i] ^ src[i - 1];
    const bool same_a = (x >> 32) == 0, same_ab = x == 0;
    ties_a += same_a ? run_a : 0;
    run_a = same_a ? run_a + 1 : 1;
    ties_ab += same_ab ? run_ab : 0;
    run_ab = same_ab ? run_ab + 1 : 1;
  }
  out[0] = ties_a;
  out[1] = ties_b;
  out[2] = ties_ab;
  out[3] = discordant_pairs(src, d, first, scratch + 3 * d);
}

inline void row(const float* a, const float* b, int64_t d, int64_t* o, uint64_t* s) { row_packed(a, b, d, o, s); }
inline void row(const int32_t* a, const int32_t* b, int64_t d, int64_t* o, uint64_t* s) { row_packed(a, b, d, o, s); }
inline void row(const double* a, const double* b, int64_t d, int64_t* o, uint64_t* s) { row_wide(a, b, d, o, s); }
inline void row(const int64_t* a, const int64_t* b, int64_t d, int64_t* o, uint64_t* s) { row_wide(a, b, d, o, s); }

// rows shared among `threads` threads (the caller's included) through an atomic counter
template <class T>
void rows(const T* a, const T* b, int64_t n, int64_t d, int64_t* out, int threads) {
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    std::vector<uint64_t> scratch(6 * static_cast<size_t>(d) + 2);
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      if (d < 2) {
        std::fill(out + 5 * i, out + 5 * i + 5, 0);
        for (int64_t j = 0; j < d; ++j) out[5 * i + 4] |= is_nan(a[i * d + j]) | is_nan(b[i * d + j]);
      } else {
        row(a + i * d, b + i * d, d, out + 5 * i, scratch.data());
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads && t < n; ++t) {
    try {
      pool.emplace_back(work);
    } catch (...) {
      break;  // no more threads: the others share the work
    }
  }
  work();
  for (auto& th : pool) th.join();
}

}  // namespace

extern "C" {
int kendall_kernel_version() { return 2; }
void kendall_counts_f32(const float* a, const float* b, int64_t n, int64_t d, int64_t* out, int threads) {
  rows(a, b, n, d, out, threads);
}
void kendall_counts_f64(const double* a, const double* b, int64_t n, int64_t d, int64_t* out, int threads) {
  rows(a, b, n, d, out, threads);
}
void kendall_counts_i32(const int32_t* a, const int32_t* b, int64_t n, int64_t d, int64_t* out, int threads) {
  rows(a, b, n, d, out, threads);
}
void kendall_counts_i64(const int64_t* a, const int64_t* b, int64_t n, int64_t d, int64_t* out, int threads) {
  rows(a, b, n, d, out, threads);
}
}
"""

FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-pthread"]

# input dtype -> (kernel dtype, exported function); the conversions are exact
_KERNEL_DTYPES = {
    torch.float32: torch.float32, torch.float16: torch.float32, torch.bfloat16: torch.float32,
    torch.float64: torch.float64,
    torch.int32: torch.int32, torch.int16: torch.int32, torch.int8: torch.int32, torch.uint8: torch.int32,
    torch.bool: torch.int32, torch.int64: torch.int64,
}
_FUNCTIONS = {torch.float32: "kendall_counts_f32", torch.float64: "kendall_counts_f64",
              torch.int32: "kendall_counts_i32", torch.int64: "kendall_counts_i64"}

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib": the loaded library or None once tried


def cache_dir() -> Path:
    """Where the built library is kept: ``$ROBUSTXAI_CACHE_DIR`` or ``~/.cache/robustxai``."""
    return Path(os.environ.get("ROBUSTXAI_CACHE_DIR") or Path.home() / ".cache" / "robustxai")


def find_compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX``, else the first of c++, g++, clang++ on PATH."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(compiler: str) -> Path:
    """Compile SOURCE into the cache (atomically: a temporary file, then a rename) and return its path."""
    digest = hashlib.sha256("\0".join([SOURCE, compiler, *FLAGS, platform.machine()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"kendall_kernel_{digest}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        source, built = Path(tmp) / "kendall_kernel.cpp", Path(tmp) / target.name
        source.write_text(SOURCE)
        subprocess.run([compiler, *FLAGS, str(source), "-o", str(built)], check=True, capture_output=True,
                       text=True, timeout=300)
        os.replace(built, target)
    return target


def load() -> ctypes.CDLL | None:
    """The kernel library, built on first call; None where disabled or unavailable (logged once)."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib = None
        if os.environ.get("ROBUSTXAI_KENDALL_KERNEL", "1").strip().lower() in ("0", "false", "no", "off", "eager"):
            log.info("kendall_tau: compiled kernel disabled by ROBUSTXAI_KENDALL_KERNEL; eager torch path")
        elif (compiler := find_compiler()) is None:
            log.info("kendall_tau: no C++ compiler (set CXX); eager torch path")
        else:
            try:
                lib = ctypes.CDLL(str(_build(compiler)))
                for name in _FUNCTIONS.values():
                    fn = getattr(lib, name)
                    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                   ctypes.c_void_p, ctypes.c_int]
                    fn.restype = None
            except (OSError, subprocess.SubprocessError, AttributeError) as err:
                detail = getattr(err, "stderr", "") or err
                log.warning("kendall_tau: building the compiled kernel failed (%s); eager torch path", detail)
                lib = None
        _state["lib"] = lib
        return lib


def available() -> bool:
    """Whether :func:`kendall_counts` runs the compiled kernel (building it if needed)."""
    return load() is not None


def supports(a: Tensor) -> bool:
    """Whether the kernel takes maps like ``a``: on the CPU, of a dtype it reads exactly."""
    return a.device.type == "cpu" and a.dtype in _KERNEL_DTYPES and a.shape[1] < 2**31


def kendall_counts(a: Tensor, b: Tensor, threads: int | None = None) -> Tensor | None:
    """(N, 5) int64 [tied in a, tied in b, tied in both, discordant, 1 if a or b holds a NaN] of (N, D) maps.

    None where the kernel does not take the maps (see :func:`supports`) or is unavailable.
    ``threads`` defaults to ``torch.get_num_threads()``; small batches stay on one thread.
    NaN values get an arbitrary but consistent order; the fifth column lets the caller mask those maps.
    """
    if not (supports(a) and supports(b)) or (lib := load()) is None:
        return None
    kind = _KERNEL_DTYPES[a.dtype] if _KERNEL_DTYPES[a.dtype] == _KERNEL_DTYPES[b.dtype] else None
    if kind is None:  # mixed kinds: float64 holds float32 and int32 exactly; int64 needs its own path
        if torch.int64 in (a.dtype, b.dtype):
            return None
        kind = torch.float64
    a = a.detach().to(kind).contiguous()
    b = b.detach().to(kind).contiguous()
    n, d = a.shape
    out = torch.empty(n, 5, dtype=torch.int64)
    if threads is None:
        threads = torch.get_num_threads()
    threads = max(1, min(threads, n, (n * d) // MIN_ELEMENTS_PER_THREAD))
    getattr(lib, _FUNCTIONS[kind])(a.data_ptr(), b.data_ptr(), n, d, out.data_ptr(), threads)
    return out
