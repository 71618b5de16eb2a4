"""Vector quantiser: nearest code, straight-through gradient, EMA update, dead-code restart."""

from __future__ import annotations

import torch

from brainvq.models.quantizer import VectorQuantizerEMA


def _vq(**kw) -> VectorQuantizerEMA:
    torch.manual_seed(0)
    vq = VectorQuantizerEMA(4, 2, **kw)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    vq.ema_sum.copy_(vq.codebook)
    vq.initialised.fill_(True)
    return vq


def test_nearest_code_by_l2():
    vq = _vq().eval()
    z = torch.tensor([[0.1, 0.05], [0.9, 0.2], [0.2, 0.8], [4.0, 4.5], [0.45, 0.0]])  # (N,D)
    out = vq(z.T.reshape(1, 2, 5, 1))
    assert out.codes.flatten().tolist() == [0, 1, 2, 3, 0]
    brute = torch.cdist(z, vq.codebook).argmin(1)
    assert torch.equal(out.codes.flatten(), brute)
    assert torch.allclose(out.quantized.reshape(2, 5).T, vq.codebook[brute])


def test_nearest_matches_brute_force_for_a_large_codebook():
    torch.manual_seed(1)
    vq = VectorQuantizerEMA(256, 8).eval()
    vq.codebook.copy_(torch.randn(256, 8))
    vq.codebook[200] = vq.codebook[37]  # a duplicate code: the first one must win, like argmin
    flat = torch.cat([torch.randn(5000, 8), vq.codebook[37:38].repeat(3, 1)])
    brute = torch.cdist(flat.double(), vq.codebook.double()).argmin(1)
    assert torch.equal(vq.nearest(flat), brute)
    assert (vq.nearest(flat)[-3:] == 37).all()


def test_straight_through_gradient_and_commitment():
    vq = _vq().eval()
    z = torch.randn(2, 2, 3, 3, requires_grad=True)
    out = vq(z)
    w = torch.randn_like(out.quantized)
    (out.quantized * w).sum().backward()
    assert torch.allclose(z.grad, w)  # gradient copied straight through the quantiser
    z2 = z.detach().clone().requires_grad_(True)
    out2 = vq(z2)
    out2.commitment_loss.backward()
    q = vq.codebook[out2.codes.flatten()].reshape(2, 3, 3, 2).permute(0, 3, 1, 2)
    commit_grad = 2 * 0.25 * (z2.detach() - q) / z2.numel()
    assert torch.allclose(z2.grad, commit_grad, atol=1e-6)
    assert torch.allclose(out2.commitment_loss, 0.25 * ((z2.detach() - q) ** 2).mean())
    z3 = z.detach().clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out3 = vq(z3)  # both paths at once, channels-last input
    (3 * out3.commitment_loss + (out3.quantized * w).sum()).backward()
    assert torch.allclose(z3.grad, w + 3 * commit_grad, atol=1e-6)


def test_ema_update_moves_code_towards_assigned_mean():
    vq = _vq(decay=0.5, restart_every=0).train()
    z = torch.tensor([[0.9, 0.2]] * 4).T.reshape(1, 2, 4, 1)  # all nearest to code 1
    before = vq.codebook.clone()
    vq(z)
    assert not torch.allclose(vq.codebook[1], before[1])
    assert torch.norm(vq.codebook[1] - torch.tensor([0.9, 0.2])) < torch.norm(before[1] - torch.tensor([0.9, 0.2]))
    assert torch.allclose(vq.codebook[3], before[3], atol=0.05 * 5)  # unassigned code barely moves (only smoothing)
    for _ in range(30):
        vq(z)
    assert torch.allclose(vq.codebook[1], torch.tensor([0.9, 0.2]), atol=1e-2)


def test_no_update_in_eval_mode():
    vq = _vq().eval()
    before = vq.codebook.clone()
    vq(torch.randn(1, 2, 4, 4))
    assert torch.equal(before, vq.codebook)


def test_dead_codes_are_restarted_from_encoder_outputs():
    vq = _vq(restart_every=5).train()
    z = torch.tensor([[0.9, 0.2], [0.1, 0.1]] * 8).T.reshape(1, 2, 16, 1)  # only codes 0 and 1 used
    for _ in range(5):
        vq(z)
    assert int(vq.restarts) == 2  # codes 2 and 3 were never used
    inputs = torch.tensor([[0.9, 0.2], [0.1, 0.1]])
    for k in (2, 3):  # restarted codes now sit near real encoder outputs
        assert torch.cdist(vq.codebook[k : k + 1], inputs).min() < 0.1


def test_first_batch_initialises_codebook():
    torch.manual_seed(0)
    vq = VectorQuantizerEMA(8, 3).train()
    z = torch.randn(2, 3, 4, 4) * 10 + 50
    vq(z)
    assert bool(vq.initialised)
    assert vq.codebook.mean() > 40  # codes taken from the data, not the random start


def test_usage_and_perplexity_over_epoch():
    vq = _vq().eval()
    vq.reset_usage()
    vq(torch.zeros(1, 2, 2, 2))  # code 0 only
    vq(torch.tensor([[1.0, 0.0]]).T.reshape(1, 2, 1, 1).expand(1, 2, 2, 2).contiguous())  # code 1
    stats = vq.usage_stats()
    assert stats["codes_used"] == 2 and stats["usage"] == 0.5
    assert abs(stats["perplexity"] - 2.0) < 1e-4
    vq.reset_usage()
    assert vq.usage_stats()["usage"] == 0.0


def test_distance_in_fp32_under_autocast():
    vq = _vq().eval()
    z = torch.randn(1, 2, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z)
    assert out.quantized.dtype == torch.bfloat16 and out.commitment_loss.dtype == torch.float32
    assert torch.equal(out.codes, vq(z.float()).codes)  # same choice as an fp32 computation
