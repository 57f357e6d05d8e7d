"""Parity with pyiqa's reference CFANet (use_ref=True) on the same weights."""

from __future__ import annotations

import pytest
import torch
from conftest import distort, smooth_images

from topiq_loss import topiq_fr

SHAPES = [
    (1, 3, 32, 32),
    (2, 3, 33, 47),
    (4, 3, 64, 64),
    (3, 3, 97, 61),
    (1, 3, 128, 200),
    (2, 3, 255, 129),
    (1, 3, 224, 224),
    (1, 3, 512, 512),
]


def _score_grad(fn, dist, ref):
    d = dist.clone().requires_grad_(True)
    s = fn(d, ref).reshape(-1)
    (g,) = torch.autograd.grad(s.sum(), d)
    return s.detach(), g


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_scores_and_gradients_match_reference(net, unfused_net, reference_net, shape):
    """Scores of the default (fused) path within 1e-4 of pyiqa's float32; the unfused
    path follows pyiqa's own arithmetic, so its gradients match to 1e-3. The fused
    path's gradients are judged against float64 in test_accuracy.py."""
    ref = smooth_images(shape[0], shape[2], shape[3], seed=sum(shape))
    dist = distort(ref, seed=1, level=0.08)
    s_ref, g_ref = _score_grad(reference_net, dist, ref)
    with torch.no_grad():
        s = net(dist, ref)
    s_u, g_u = _score_grad(unfused_net, dist, ref)
    assert s.shape == (shape[0],)
    assert (s - s_ref).abs().max().item() <= 1e-4
    assert (s_u - s_ref).abs().max().item() <= 1e-4
    assert ((g_u - g_ref).norm() / g_ref.norm()).item() <= 1e-3


def test_loss_front_end_matches_reference(unfused_net, reference_net):
    """Through the checked functional API, incl. (-1, 1) inputs and the gradient to target."""
    # Multiples of 1/256 map to [-1, 1] and back exactly: the gradient of the model's
    # sqrt((a - b)^2 + 1e-12) jumps within 1e-6 of a == b, so rounding would show.
    ref = (smooth_images(2, 48, 56, seed=3) * 256).floor().clamp(max=255) / 256
    dist = (distort(ref, seed=4) * 256).floor().clamp(max=255) / 256
    d = (dist * 2 - 1).requires_grad_(True)
    t = (ref * 2 - 1).requires_grad_(True)
    s = topiq_fr(d, t, net=unfused_net, input_range=(-1, 1))
    gd, gt = torch.autograd.grad(s.sum(), (d, t))

    d0, t0 = dist.clone().requires_grad_(True), ref.clone().requires_grad_(True)
    s0 = reference_net(d0, t0).reshape(-1)
    gd0, gt0 = torch.autograd.grad(s0.sum(), (d0, t0))
    assert (s.detach() - s0.detach()).abs().max() <= 1e-4
    # d/d(x in [-1,1]) = 0.5 * d/d(x in [0,1])
    assert ((gd - 0.5 * gd0).norm() / (0.5 * gd0).norm()) <= 1e-3
    assert ((gt - 0.5 * gt0).norm() / (0.5 * gt0).norm()) <= 1e-3


def test_values_outside_unit_range_pass_through_like_reference(net, reference_net):
    ref = smooth_images(1, 40, 40, seed=5)
    dist = ref * 1.2 - 0.1  # overshoots both ends
    with torch.no_grad():
        assert torch.allclose(topiq_fr(dist, ref, net=net), reference_net(dist, ref).reshape(-1), atol=1e-4)


def test_reference_is_sensitive_to_weights(net, reference_net):
    """Guard: the parity test would fail if the weights differed."""
    ref = smooth_images(1, 40, 40, seed=6)
    dist = distort(ref, seed=7)
    with torch.no_grad():
        base = net(dist, ref)
        saved = reference_net.score_linear[6].bias.clone()
        try:
            reference_net.score_linear[6].bias.add_(1e-3)
            other = reference_net(dist, ref).reshape(-1)
        finally:
            reference_net.score_linear[6].bias.copy_(saved)
    assert (base - other).abs().max() > 5e-4
