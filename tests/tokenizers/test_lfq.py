"""LFQ: token/bit maths, exact factorised entropy vs brute force, gradients, distributed == single."""

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from videopoet.tokenizers.lfq import (
    LFQ,
    bits_to_indices,
    brute_force_entropy_terms,
    codebook_marginal,
    entropy_weight_at,
    indices_to_bits,
    join_tokens,
    lfq_entropy_terms,
    split_tokens,
)


def test_indices_bits_roundtrip_and_factorisation():
    idx = torch.tensor([0, 1, 2, 511, 512, 262143, 123456])
    bits = indices_to_bits(idx, 18)
    assert bits.shape == (7, 18)
    assert torch.equal(bits_to_indices(bits), idx)
    # little-endian: index 1 has bit 0 set only, 512 has bit 9 set only
    assert bits[1, 0] == 1 and (bits[1, 1:] == -1).all()
    assert bits[4, 9] == 1 and (bits[4, :9] == -1).all()
    lo, hi = split_tokens(idx)
    assert lo.max() < 512 and hi.max() < 512
    assert torch.equal(lo, idx % 512) and torch.equal(hi, idx // 512)
    assert torch.equal(join_tokens(lo, hi), idx)


@pytest.mark.parametrize("bits,scale", [(10, 0.02), (12, 0.01), (12, 0.5), (18, 0.01)])
def test_factorised_entropy_equals_brute_force(bits, scale):
    torch.manual_seed(bits)
    z = torch.randn(64, bits, dtype=torch.float64) * scale
    fast = lfq_entropy_terms(z.float(), tau=0.01)
    slow = brute_force_entropy_terms(z, tau=0.01)
    for a, b in zip(fast, slow):
        assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-4), (a, b)
    # sanity of the scale: both terms lie in [0, bits*ln2]
    assert 0 <= float(fast[1]) <= bits * math.log(2) + 1e-4


def test_codebook_marginal_is_a_distribution_and_matches_hard_codes():
    torch.manual_seed(0)
    z = torch.randn(200, 18)
    q = codebook_marginal(4 * z / 1e-4)  # near-hard assignments
    assert q.shape == (512, 512)
    assert torch.allclose(q.sum(), torch.tensor(1.0), atol=1e-5)
    counts = torch.bincount(bits_to_indices(z), minlength=1 << 18).float() / 200
    assert torch.allclose(q.T.reshape(-1), counts, atol=1e-5)  # code a + 512 b at Q[a, b]


def test_lfq_forward_gradients_and_losses():
    torch.manual_seed(0)
    lfq = LFQ(bits=18)
    z = torch.randn(2, 18, 3, 4, 4, requires_grad=True)
    out = lfq(z)
    assert out.indices.shape == (2, 3, 4, 4)
    assert set(out.quantized.detach().unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(out.indices, bits_to_indices(z.detach().movedim(1, -1)))
    loss = out.quantized.square().mul(torch.randn_like(z)).sum() + 0.25 * out.commit_loss + 0.1 * out.entropy_loss
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0 and torch.isfinite(z.grad).all()
    # closed form of the commitment loss
    assert torch.allclose(out.commit_loss, (z.detach() - z.detach().sign()).square().mean(), atol=1e-6)
    # decode ids back to the same {-1,+1} latents
    assert torch.equal(lfq.indices_to_latents(out.indices), out.quantized.detach())
    with pytest.raises(ValueError, match="token ids"):
        lfq.indices_to_latents(torch.tensor([[1 << 18]]))


def test_entropy_annealing_schedule():
    assert entropy_weight_at(0, 0.1, 3.0, 2000) == pytest.approx(0.4)
    assert entropy_weight_at(1000, 0.1, 3.0, 2000) == pytest.approx(0.25)
    assert entropy_weight_at(5000, 0.1, 3.0, 2000) == pytest.approx(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank, world, port, x, weight, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        w = weight.clone().requires_grad_(True)  # a parameter shared by all ranks, as under DDP
        _, code_h = lfq_entropy_terms(x.chunk(world)[rank] @ w)
        code_h.backward()
        g = w.grad.clone()
        torch.distributed.all_reduce(g)  # DDP's gradient averaging
        out[rank] = (float(code_h), g / world)
    finally:
        torch.distributed.destroy_process_group()


def test_distributed_codebook_entropy_and_gradient_equal_single_process():
    torch.manual_seed(0)
    x = torch.randn(40, 8)
    weight = torch.randn(8, 18) * 0.003
    w = weight.clone().requires_grad_(True)
    _, code_h = lfq_entropy_terms(x @ w)
    code_h.backward()
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_dist_worker, args=(2, _free_port(), x, weight, out), nprocs=2, join=True)
    for rank in range(2):
        h, g = out[rank]
        assert h == pytest.approx(code_h.detach().item(), rel=1e-5)
        assert torch.allclose(g, w.grad, rtol=1e-4, atol=1e-6), (g - w.grad).abs().max()
    # and the global entropy differs from what each rank alone would compute (the point of it)
    local = float(lfq_entropy_terms(x.chunk(2)[0] @ weight)[1])
    assert abs(local - code_h.detach().item()) > 1e-3
