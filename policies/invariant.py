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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
    batch expand of w is a stride-0 view, never a copy)."""
    B = x.shape[0]
    if x.dim() == 3:
        return _bmm(x, w.expand(B, -1, -1), bias)
    y = _bmm(x.reshape(B, -1, x.shape[-1]), w.expand(B, -1, -1), bias)  # a sample = a matrix
    return y.view(*x.shape[:-1], w.shape[1])


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
