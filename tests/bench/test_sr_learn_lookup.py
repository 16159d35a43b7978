"""bench/sr_learn.py's parent-token lookup (how much one LR token says about its 2 x 2 HR tokens), on known tables."""

import importlib.util
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sr_learn.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_sr_learn", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lookup_recovers_a_function_of_the_parent_and_falls_back_to_the_commonest_token():
    bench = _bench()
    g = torch.Generator().manual_seed(0)
    lr = torch.randint(0, 6, (40, 2, 3, 3), generator=g)
    child = torch.tensor([[0, 1], [2, 3]]).repeat(3, 3)  # position within the parent, [6, 6]
    hr = 100 * lr.repeat_interleave(2, -2).repeat_interleave(2, -1) + child  # a function of (parent, child)
    predicted = bench.parent_lookup(hr[8:], lr[8:], lr[:8])
    assert torch.equal(predicted, hr[:8])
    # an LR id never seen in training: the commonest training HR token; a seen one keeps its own mapping
    unseen = lr[:1].clone()
    unseen[0, 0, 0, 0] = 99
    out = bench.parent_lookup(hr[8:], lr[8:], unseen)
    commonest = int(torch.bincount(hr[8:].reshape(-1)).argmax())
    assert (out[0, 0, :2, :2] == commonest).all() and torch.equal(out[0, 1], hr[0, 1])


def test_lookup_takes_the_majority_under_a_noisy_mapping():
    bench = _bench()
    lr = torch.zeros(3, 1, 1, 1, dtype=torch.long)
    hr = torch.tensor([[[[7, 7], [7, 7]]], [[[7, 5], [7, 7]]], [[[5, 5], [5, 5]]]])
    out = bench.parent_lookup(hr, lr, lr[:1])
    assert out.tolist() == [[[[7, 5], [7, 7]]]]  # per child position: 7 twice vs 5 once, 5 twice vs 7 once at (0,1)
