"""Property tests (hypothesis) on scores and gradients.

Profiles: "ci" (default, 12 examples, derandomised) and "dev"
(HYPOTHESIS_PROFILE=dev, 40 random examples).
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd.gradcheck import GradcheckError

from topiq_loss import TOPIQLoss, topiq_fr, topiq_fr_loss

KINDS = ["random", "zeros", "ones", "constant", "equal", "saturated"]


@st.composite
def image_pairs(draw, max_batch: int = 3, max_side: int = 96):
    n = draw(st.integers(1, max_batch))
    h = draw(st.integers(32, max_side))
    w = draw(st.integers(32, max_side))
    kind = draw(st.sampled_from(KINDS))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 3, h, w, generator=g)
    pred = torch.rand(n, 3, h, w, generator=g)
    if kind == "zeros":
        pred = torch.zeros_like(pred)
    elif kind == "ones":
        pred, target = torch.ones_like(pred), torch.zeros_like(target)
    elif kind == "constant":
        pred = torch.full_like(pred, 0.5)
        target = torch.full_like(target, 0.25)
    elif kind == "equal":
        pred = target.clone()
    elif kind == "saturated":
        pred = (pred > 0.5).float()
    return pred, target


@given(image_pairs())
def test_gradients_are_finite_for_any_valid_input(loss_fn, pair):
    pred, target = pair
    p = pred.clone().requires_grad_(True)
    loss = loss_fn(p, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all()


@given(image_pairs(max_batch=3, max_side=64))
def test_per_sample_independence(net, pair):
    pred, target = pair
    p = pred.clone().requires_grad_(True)
    scores = topiq_fr(p, target, net=net)
    i = pred.shape[0] - 1
    (g,) = torch.autograd.grad(scores[i], p)
    others = torch.arange(pred.shape[0]) != i
    assert g[i].abs().sum() > 0
    if others.any():
        assert g[others].abs().max().item() == 0.0
    with torch.no_grad():
        single = torch.cat([topiq_fr(pred[j : j + 1], target[j : j + 1], net=net) for j in range(pred.shape[0])])
    assert torch.allclose(scores.detach(), single, atol=1e-5)


@given(image_pairs(max_side=48), st.floats(-3, 3, allow_nan=False))
def test_reduction_algebra_and_linear_in_loss_weight(net, pair, weight):
    pred, target = pair
    with torch.no_grad():
        none = topiq_fr_loss(pred, target, net=net, reduction="none")
        s = topiq_fr_loss(pred, target, net=net, reduction="sum", loss_weight=weight)
        m = topiq_fr_loss(pred, target, net=net, reduction="mean", loss_weight=weight)
    n = pred.shape[0]
    assert none.shape == (n,)
    assert torch.allclose(s, weight * none.sum(), atol=1e-5)
    assert torch.allclose(m, weight * none.mean(), atol=1e-5)
    assert torch.allclose(s, m * n, atol=1e-5)


@pytest.fixture(scope="module")
def checkpointed(net):
    """The session network, with gradient checkpointing on (a setting of the network)."""
    return copy.deepcopy(net).set_grad_checkpointing()


@given(image_pairs(max_batch=2, max_side=64))
def test_checkpointing_gives_identical_gradients(net, checkpointed, pair):
    pred, target = pair
    grads = []
    for model in (net, checkpointed):
        p = pred.clone().requires_grad_(True)
        topiq_fr_loss(p, target, net=model).backward()
        grads.append(p.grad)
    denom = grads[0].norm().clamp_min(1e-12)
    assert ((grads[0] - grads[1]).norm() / denom).item() <= 1e-6


def test_checkpointing_also_with_target_requiring_grad(net, checkpointed):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 40, 48, generator=g), torch.rand(2, 3, 40, 48, generator=g)
    out = []
    for model in (net, checkpointed):
        p, t = pred.clone().requires_grad_(True), target.clone().requires_grad_(True)
        topiq_fr_loss(p, t, net=model).backward()
        out.append((p.grad, t.grad))
    for a, b in zip(*out, strict=True):
        assert ((a - b).norm() / a.norm()).item() <= 1e-6


@given(image_pairs(max_batch=2, max_side=48))
def test_no_gradient_into_network_and_deterministic(loss_fn, pair):
    # Bitwise repeatability is promised on one thread only: at 2+ threads CPU backward
    # kernels may split reductions differently between runs (seen on a loaded 2-core CI).
    pred, target = pair
    runs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(2):
            p = pred.clone().requires_grad_(True)
            loss = loss_fn(p, target)
            loss.backward()
            runs.append((loss.detach(), p.grad))
    finally:
        torch.set_num_threads(threads)
    # (The network's tensors are buffers: parameters() is empty, so check them all.)
    assert all(q.grad is None and not q.requires_grad for q in loss_fn.net.state_dict(keep_vars=True).values())
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@given(image_pairs(max_batch=2, max_side=64))
def test_small_step_against_gradient_lowers_loss(loss_fn, pair):
    pred, target = pair
    p = pred.clone().requires_grad_(True)
    loss = loss_fn(p, target)
    (g,) = torch.autograd.grad(loss, p)
    if g.norm() < 1e-8:
        return  # a stationary point: nothing to descend
    step = 1e-3 / g.norm()
    with torch.no_grad():
        lower = loss_fn(pred - step * g, target)
    assert lower < loss.detach()


@pytest.fixture(scope="module")
def net64(net):
    return copy.deepcopy(net).double()


def test_gradcheck_float64_through_the_loss(net64):
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64).requires_grad_(True)
    target = torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64).requires_grad_(True)
    loss_fn = TOPIQLoss(net=net64)
    assert torch.autograd.gradcheck(lambda a, b: loss_fn(a, b), (pred, target), fast_mode=True, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_gradcheck_detects_a_wrong_gradient(net64):
    """The gradcheck above can fail: a function with a deliberately wrong backward fails it."""

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return 1.5 * grad

    g = torch.Generator().manual_seed(1)
    pred = torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64)
    target = torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64)
    direction = torch.randn(1, 3, 32, 32, generator=g, dtype=torch.float64)
    # One scalar input keeps gradcheck's slow-mode error report cheap.
    t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    loss_fn = TOPIQLoss(net=net64)
    # eps 1e-7: a step of 1e-6 along `direction` moves some feature difference across
    # zero, where sqrt((a - b)^2 + 1e-12) has its kink (finite difference off by 0.2%).
    ok = torch.autograd.gradcheck(lambda a: loss_fn(pred + a * direction, target), (t,), eps=1e-7, atol=1e-5, rtol=1e-3)
    assert ok
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(lambda a: loss_fn(pred + Wrong.apply(a) * direction, target), (t,), eps=1e-7, atol=1e-5, rtol=1e-3)
