"""Lookup-free quantisation (MAGVIT-v2 §3.1) with an exact, cheap, distributed entropy penalty.

Each of the d latent channels is quantised to sign(z) in {-1, +1}; the token is the bits read as a
little-endian integer, `index = sum_i 2^i * [z_i > 0]`, so K = 2^d codes (2^18 = 262,144) and
there is no codebook parameter. Token factorisation (for the LM's two 512-way heads) splits an
18-bit index into `lo = index & 511` (bits 0..8) and `hi = index >> 9` (bits 9..17).

Losses (weights as the MAGVIT authors used them everywhere: commitment 0.25, entropy 0.1):
    commit  = mean ||z - sg(q(z))||^2
    entropy = E_n[H(q_n)] - H(E_n[q_n])         q_n(c) = softmax_c(-||z_n - c||^2 / tau), tau = 0.01
The entropy weight is annealed: w(step) = w * (1 + r * max(0, 1 - step / S)) (r = 3, S = 2000).

Why the entropy never needs N x 2^d probabilities: -||z - c||^2 = 2 z.c + const, so the softmax
factorises over bits, q_n(c) = prod_i p_{n,i}^{b_i} (1 - p_{n,i})^{1 - b_i} with
p_{n,i} = sigmoid(4 z_{n,i} / tau). Hence
  * per-token entropy H(q_n) = sum_i h_b(p_{n,i})                                     O(N d)
  * codebook marginal: split the bits into A = bits 0..8 and B = bits 9..17. q_n(a, b) =
    P_A[n, a] * P_B[n, b], where P_A[n, a] = prod_{i in A} (bit-probabilities of pattern a),
    an N x 512 matrix (likewise P_B). The marginal over the batch is therefore exactly
        Q[a, b] = (1/N) sum_n P_A[n, a] P_B[n, b] = (1/N) (P_A^T P_B)[a, b]
    one (512 x N) @ (N x 512) product; the 512 x 512 result *is* the 2^18-entry marginal, with
    code index a + 512 b. H(Q) is then a sum over 2^18 entries, independent of N.
  Memory: two N x 512 fp32 matrices + one 512 x 512 (at N = 10,240: 2 x 20 MiB + 1 MiB), against
  N x 2^18 fp32 = 10 GiB per copy for the direct softmax (bench/tokenizer.py --mode lfq-memory).
Under torch.distributed the sum P_A^T P_B and the token count are all-reduced (differentiably), so
the codebook entropy is that of the global batch; with DDP's gradient averaging the resulting
parameter gradient is exactly that of H(Q_global) (see `codebook_marginal`).
Everything here runs in fp32 (half precision gives NaNs in these logs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HALF_BITS = 9


def indices_to_bits(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """LongTensor[...] -> float {-1, +1} [..., bits] (little-endian bit order)."""
    mask = 2 ** torch.arange(bits, device=indices.device, dtype=torch.long)
    return ((indices.unsqueeze(-1) & mask) != 0).float() * 2 - 1


def bits_to_indices(z: torch.Tensor) -> torch.Tensor:
    """[..., bits] real values -> LongTensor[...]: bit i set where z_i > 0."""
    bits = z.shape[-1]
    mask = 2 ** torch.arange(bits, device=z.device, dtype=torch.long)
    return ((z > 0).long() * mask).sum(-1)


def split_tokens(indices: torch.Tensor, low_bits: int = HALF_BITS) -> tuple[torch.Tensor, torch.Tensor]:
    """Token factorisation: index -> (lo, hi) with lo = bits 0..8 and hi = the remaining bits."""
    return indices & ((1 << low_bits) - 1), indices >> low_bits


def join_tokens(lo: torch.Tensor, hi: torch.Tensor, low_bits: int = HALF_BITS) -> torch.Tensor:
    return lo + (hi << low_bits)


def entropy_weight_at(step: int, weight: float, anneal_ratio: float, anneal_steps: int) -> float:
    """MAGVIT's entropy annealing: the weight starts at (1 + r) * w and falls linearly to w."""
    if anneal_steps <= 0:
        return weight
    return weight * (1.0 + anneal_ratio * max(0.0, 1.0 - step / anneal_steps))


def _binary_entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    # h(sigmoid(x)) = -p log p - (1-p) log(1-p), written with logsigmoid so |x| ~ 1e3 stays finite.
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits))


def _pattern_matrix(nbits: int, device: torch.device) -> torch.Tensor:
    """[2^nbits, nbits] 0/1 matrix: row a holds the little-endian bits of a."""
    a = torch.arange(1 << nbits, device=device)
    return ((a.unsqueeze(-1) >> torch.arange(nbits, device=device)) & 1).float()


def group_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """[N, g] bit logits -> [N, 2^g] probabilities of every bit pattern of the group (exact)."""
    pattern = _pattern_matrix(logits.shape[-1], logits.device)
    log_pos, log_neg = F.logsigmoid(logits), F.logsigmoid(-logits)
    # log P[n, a] = sum_i a_i log p_i + (1 - a_i) log(1 - p_i): two [N, g] @ [g, 2^g] products.
    return torch.exp(log_pos @ pattern.T + log_neg @ (1 - pattern).T)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum): the backward sums the upstream gradients of every rank.

    Written here because torch.distributed.nn.functional.all_reduce is deprecated in torch 2.14.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad


def codebook_marginal(logits: torch.Tensor, split: int = HALF_BITS) -> torch.Tensor:
    """Exact batch marginal over all 2^d codes, as a [2^split, 2^(d-split)] matrix Q[a, b].

    `logits` [N, d] are the per-bit logits 4 z / tau. Code index = a + 2^split * b. Summed over
    data-parallel ranks when torch.distributed is initialised (the all-reduce is differentiable:
    its backward sums the identical upstream gradients of all ranks, i.e. world_size x the local
    one, and DDP's averaging divides that back, giving the exact gradient of H(Q_global)).
    """
    n, d = logits.shape
    if d - split > 15:
        raise ValueError(f"codebook_marginal: {d} bits would need a 2^{d - split} wide factor; "
                         f"use <= {split + 15} bits")
    p_a = group_probabilities(logits[:, :split])
    p_b = group_probabilities(logits[:, split:]) if d > split else logits.new_ones(n, 1)
    joint = p_a.T @ p_b  # sum_n P_A[n, a] P_B[n, b]
    count = logits.new_tensor(float(n))
    if _distributed():
        joint = _AllReduceSum.apply(joint)
        count = count.clone()
        torch.distributed.all_reduce(count)
    return joint / count


def lfq_entropy_terms(z: torch.Tensor, tau: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-token entropy, codebook entropy) in nats for latents z [N, d]; fp32, exact."""
    logits = 4.0 * z.float() / tau
    sample_entropy = _binary_entropy_from_logits(logits).sum(-1).mean()
    q = codebook_marginal(logits)
    codebook_entropy = -(q * torch.log(q.clamp_min(1e-30))).sum()
    return sample_entropy, codebook_entropy


def brute_force_entropy_terms(z: torch.Tensor, tau: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """The direct N x 2^d softmax, as Open-MAGVIT2 / MaskBit compute it (tests and the memory bench).

    Logits 2 z.c / tau: -||z - c||^2 = 2 z.c - ||z||^2 - d, and the row constants cancel in the softmax.
    """
    d = z.shape[-1]
    z = z if z.dtype == torch.float64 else z.float()
    codes = indices_to_bits(torch.arange(1 << d, device=z.device), d).to(z.dtype)  # [K, d]
    logits = 2 * z @ codes.T / tau  # [N, K]
    log_q = torch.log_softmax(logits, dim=-1)
    q = log_q.exp()
    sample_entropy = -(q * log_q).sum(-1).mean()
    avg = q.mean(0)
    codebook_entropy = -(avg * torch.log(avg.clamp_min(1e-30))).sum()
    return sample_entropy, codebook_entropy


@dataclass
class LFQOutput:
    quantized: torch.Tensor  # straight-through {-1, +1} latents, same shape as the input
    indices: torch.Tensor  # LongTensor, input shape without the channel dim
    commit_loss: torch.Tensor
    sample_entropy: torch.Tensor
    codebook_entropy: torch.Tensor

    @property
    def entropy_loss(self) -> torch.Tensor:
        return self.sample_entropy - self.codebook_entropy


class LFQ(nn.Module):
    """Lookup-free quantiser over channel dim 1 of [B, d, ...] latents."""

    def __init__(self, bits: int = 18, tau: float = 0.01):
        super().__init__()
        self.bits, self.tau = bits, tau

    @property
    def codebook_size(self) -> int:
        return 1 << self.bits

    def forward(self, z: torch.Tensor, with_losses: bool = True) -> LFQOutput:
        if z.shape[1] != self.bits:
            raise ValueError(f"LFQ: expected {self.bits} channels in dim 1, got shape {tuple(z.shape)}")
        z = z.float()
        q = torch.where(z > 0, 1.0, -1.0)
        quantized = z + (q - z).detach()
        flat = z.movedim(1, -1)
        indices = bits_to_indices(flat)
        if with_losses:
            commit = F.mse_loss(z, q.detach())
            sample_h, code_h = lfq_entropy_terms(flat.reshape(-1, self.bits), self.tau)
        else:
            commit = sample_h = code_h = z.new_zeros(())
        return LFQOutput(quantized, indices, commit, sample_h, code_h)

    def indices_to_latents(self, indices: torch.Tensor) -> torch.Tensor:
        """LongTensor[B, ...] -> float {-1, +1} [B, d, ...]."""
        if indices.min() < 0 or indices.max() >= self.codebook_size:
            raise ValueError(f"LFQ: token ids must lie in [0, {self.codebook_size}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        return indices_to_bits(indices, self.bits).movedim(-1, 1)


def max_codebook_entropy(bits: int) -> float:
    return bits * math.log(2)
