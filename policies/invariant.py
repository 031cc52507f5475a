"""Batch-invariant inference matmuls: a sample's result does not depend on its batch.

Why: closed-loop control amplifies any float difference, so the actions for an observation
must be bitwise the same whether the server infers it alone or fused with others
(services/serve/deployment.py `@serve.batch`). `nn.Linear` on a (B, S, K) input runs ONE
flattened (B*S, K) x (K, N) GEMM and MKL picks its kernel by that row count: measured on
torch 2.13 / MKL 2024.2 (AVX-512, 1 thread), row 0 of a (M, 64) x (64, 64) product at
M = 1 (a GEMV) differs from M = 2, and M = 1, 2, 3 all differ from the value every M >= 4
agrees on. The time MLP and adaRMS run on (B, width), so a sample's conditioning changed
bits between B = 1 and B = 2, and from there its actions (tests/pi05/
test_batch_invariance.py).

The exact formulation: one GEMM per sample, `baddbmm` over the batch dimension with the
weight expanded (stride 0, never copied), each of shape (S, K) x (K, N) whatever B is. On
one thread, B = 1 is the very GEMM `nn.Linear` runs. openpi parity (tests/pi05/
test_openpi_parity.py, fixture batch 2, this machine) stays within its tolerances: max
|diff| of sample_actions 1.2e-07 (2.4e-07 with flattened GEMMs), loss 1.4e-06. Training
keeps the flattened GEMM: the gradient of an expanded weight would materialize B copies of
the weight, and training has no batch-invariance requirement. Checked on CPU only; on a
GPU cuBLAS chooses its batched kernels by its own heuristics.

The fast exception: a sample of at least MIN_ROWS rows (the prefix, the action chunk) runs
inside ONE flattened GEMM when the BLAS is measured to compute each row independently of
the others. On one thread MKL's row results depend only on the row itself once M >= 4
(measured on torch 2.13 / MKL, AVX-512: every (M, K) x (K, N) of the model's shapes, M up
to 1792, any row position); on two threads they do not (the split of rows over threads
moves the K-reduction of some rows). `rows_independent` probes that once per (K, N, dtype,
threads) on the machine it runs on, and anything it does not vouch for keeps the
per-sample GEMMs. Why it matters: a lockstep rollout's action-chunk GEMMs are (B x 10, 64)
x (64, N), 360 of them a chunk; one flattened GEMM takes two thirds of the time of B small
ones in a bmm (B = 8, N = 128: 17 against 25 us on one thread).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_ROWS = 4  # per sample; MKL computes M = 1, 2, 3 with other kernels (module docstring)
# Row counts and positions the probe compares with a lone MIN_ROWS-row product: short and
# long products, rows at tile edges (the kernels work in tiles of 4-16 rows).
_PROBE_M = (4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 127, 256, 1025)


def rows_independent(k: int, n: int, dtype: torch.dtype) -> bool:
    """Whether F.linear's row i of an (M, k) x (k, n) product, M >= MIN_ROWS, is bitwise the
    same whatever the other rows and M are, on this machine and thread count (probed once)."""
    return _rows_independent(k, n, dtype, torch.get_num_threads())


@functools.cache
def _rows_independent(k: int, n: int, dtype: torch.dtype, threads: int) -> bool:
    g = torch.Generator().manual_seed(k * 7919 + n)
    w = torch.randn(n, k, generator=g).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype)
    probe = torch.randn(MIN_ROWS, k, generator=g).to(dtype)
    alone = F.linear(probe, w, bias)
    for m in _PROBE_M:
        x = torch.randn(m, k, generator=g).to(dtype)
        for pos in {0, m - MIN_ROWS, (m - MIN_ROWS) // 2}:
            x[pos : pos + MIN_ROWS] = probe
            if not torch.equal(F.linear(x, w, bias)[pos : pos + MIN_ROWS], alone):
                return False
    return True


_PROBE_B = (2, 3, 5, 8)  # batch sizes `same_alone_and_batched` compares a lone sample with


def same_alone_and_batched(fn, sample: tuple[Tensor, ...]) -> bool:
    """Whether `fn(*sample)`'s single sample is bitwise `fn` of batches of 2-8 that hold it
    first or last among random companions. `sample` is a tuple of tensors, each (1, ...);
    `fn` returns (B, ...). For fused kernels whose tiling is not documented (the joint
    layers' SDPA, pi05/layers.py, which caches the answer per shape)."""
    g = torch.Generator().manual_seed(0)
    alone = fn(*sample)[0]
    for B in _PROBE_B:
        for pos in (0, B - 1):
            batch = [_companions(x, B, g) for x in sample]
            for x, one in zip(batch, sample):
                x[pos] = one[0]
            if not torch.equal(fn(*batch)[pos], alone):
                return False
    return True


def _companions(x: Tensor, B: int, g: torch.Generator) -> Tensor:
    """B random samples shaped like x[0] (bool: random masks)."""
    if x.dtype == torch.bool:
        return torch.rand(B, *x.shape[1:], generator=g) > 0.3
    return torch.randn(B, *x.shape[1:], generator=g).to(x.dtype)


def batch_invariant() -> bool:
    """Whether matmuls should run per sample: inference (no autograd graph being built)."""
    return not torch.is_grad_enabled()


def _bmm(a: Tensor, b: Tensor, bias: Tensor | None) -> Tensor:
    """(G, M, K) @ (G, K, N) [+ bias (N,)] -> (G, M, N): G independent GEMMs.

    With several intra-op threads MKL splits ONE matrix's rows over the threads, but gives
    each thread whole matrices once there are two or more (measured on 2 threads: the
    (10, 64) x (64, 64) suffix GEMM alone differs from the same GEMM in a batch of 2 to 16,
    which all agree). So a single matrix runs beside a copy of itself, as in any batch.
    """
    G = a.shape[0]
    if G == 1 and a.is_cpu and torch.get_num_threads() > 1:
        return _bmm(a.expand(2, -1, -1), b.expand(2, -1, -1), bias)[:1]
    if bias is None:
        return torch.bmm(a, b)
    # bias first, then the product accumulated onto it, as addmm does (nn.Linear)
    return torch.baddbmm(bias.expand(G, a.shape[1], b.shape[2]), a, b)


def _per_sample(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """x (B, ..., K) @ w (K, N) [+ bias] -> (B, ..., N), one GEMM per x[b] (hot path: the
    batch expand of w is a stride-0 view, never a copy), or one flattened GEMM where that
    gives every row the same bits (`rows_independent`)."""
    B = x.shape[0]
    rows = x[0].numel() // x.shape[-1] if B else 0
    if rows >= MIN_ROWS and x.is_cpu and rows_independent(x.shape[-1], w.shape[1], x.dtype):
        return F.linear(x, w.t(), bias)  # (B, ..., N): ONE (B * rows, K) x (K, N) GEMM
    if x.is_cpu and x.dtype == torch.bfloat16:
        return _linear_each(x, w, bias)
    if x.dim() == 3:
        return _bmm(x, w.expand(B, -1, -1), bias)
    y = _bmm(x.reshape(B, -1, x.shape[-1]), w.expand(B, -1, -1), bias)  # a sample = a matrix
    return y.view(*x.shape[:-1], w.shape[1])


def _linear_each(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """x (B, ..., K) @ w (K, N) [+ bias] -> (B, ..., N): one F.linear call per sample.

    Why, for bf16 on CPU: F.linear reaches oneDNN's bf16 kernels (AMX / AVX512-BF16) while a
    bf16 bmm does not; full-size π0.5 at batch 1 spent most of `sample_actions` in bf16 bmm
    (benchmarks/pi05_cpu_full.py, before and after). Invariant by construction: a sample
    always runs the same single-matrix call, whatever its batch. The choice depends on the
    dtype only, never on B, so alone and batched take the same kernel.
    """
    if x.shape[0] == 0:
        return x.new_empty(*x.shape[:-1], w.shape[1])
    return torch.stack([F.linear(x[b], w.t(), bias) for b in range(x.shape[0])])


def per_sample_matmul(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (B, ..., K) @ w (K, N) [+ bias (N,)] -> (B, ..., N), one GEMM per x[b] at
    inference; the plain flattened product when autograd is on (module docstring)."""
    if not batch_invariant():
        return x @ w if bias is None else x @ w + bias
    return _per_sample(x, w, bias)


def batched_matmul(a: Tensor, b: Tensor) -> Tensor:
    """a (..., M, K) @ b (..., K, N) with equal leading (batch) dims -> (..., M, N).

    torch.matmul already runs one GEMM per leading index; this adds the single-matrix rule
    of `_bmm` at inference, so attention and pruner scores are batch-invariant too.
    """
    if not batch_invariant():
        return a @ b
    lead = a.shape[:-2]
    y = _bmm(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), None)
    return y.reshape(*lead, *y.shape[-2:])


class Linear(nn.Linear):
    """`nn.Linear` (same parameters and state-dict names) with per-sample GEMMs at inference.

    The first dimension is the batch: (B, K), (B, S, K), (B, h, S, K) all work.
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or x.dim() < 2:  # training: the flattened GEMM
            return F.linear(x, self.weight, self.bias)
        return _per_sample(x, self.weight.t(), self.bias)
