"""The anchor ``score(t, t)`` takes its shortcut and stays bitwise the generic head.

The anchored loss needs the target scored against itself. Its distance map is a
constant, so its gate is the gate network on a constant map (one call per level and
chunk size, not per sample) and the first two gated parts are one. These tests check
that the shortcut runs, that it gives exactly the generic ``head(t, t)`` (the loss is
then exactly 0 with a zero gradient at the target), under the CPU batch chunking too,
and that a fixed target (``with_target``) computes its anchor and features once.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import distort, smooth_images

import topiq_loss.models.cfanet_fr as cfanet
import topiq_loss.models.trunk as trunk
from topiq_loss import TOPIQLoss, topiq_fr_loss

#: Per-sample bytes of the stem / layer1 features of a 48 x 40 image are 122880, layer2's
#: 61440, layer3's 36864, layer4's 32768: this limit chunks them by 1, 1, 2, 3 and 3.
SMALL_CHUNKS = 130_000
CHUNKINGS = [None, SMALL_CHUNKS, 40_000]


@pytest.fixture(params=CHUNKINGS, ids=["unchunked", "chunks-1-1-2-3-3", "chunks-of-1"])
def chunking(request, monkeypatch):
    if request.param is not None:
        monkeypatch.setattr(trunk, "CPU_CHUNK_BYTES", request.param)
    return request.param


def _feats(net, x):
    with torch.no_grad():
        return net.backbone_features(x)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_anchor_head_is_bitwise_the_generic_head(net, unfused_net, chunking, n):
    x = smooth_images(n, 48, 40, seed=n)
    for model in (net, unfused_net):
        feats = _feats(model, x)
        with torch.no_grad():
            want = model.head(feats, feats)
            got = model.anchor_head(feats)
        assert torch.equal(got.score, want.score)
        assert all(torch.equal(a, b) for a, b in zip(got.gates, want.gates, strict=True))


def test_anchor_does_not_run_the_generic_front(net, monkeypatch):
    calls = []
    generic = cfanet._glp_reduce

    def counting(*args):
        calls.append(args[0].shape[0])
        return generic(*args)

    monkeypatch.setattr(cfanet, "_glp_reduce", counting)
    x = smooth_images(2, 48, 40, seed=1)
    net.score_and_anchor(distort(x, 2), x)
    assert len(calls) == 5  # the score's five levels; the generic anchor made it ten


def _gate_batches(net, run):
    """Batch sizes each level's gate network sees while ``run()`` runs, and its inputs."""
    seen: list[list[torch.Tensor]] = [[] for _ in net.weight_pool]
    handles = [
        m.register_forward_pre_hook(lambda mod, args, i=i: seen[i].append(args[0].detach().clone()))
        for i, m in enumerate(net.weight_pool)
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("n", [1, 3, 4])
def test_anchor_gate_runs_once_per_chunk_size_on_a_constant(net, monkeypatch, n):
    monkeypatch.setattr(trunk, "CPU_CHUNK_BYTES", SMALL_CHUNKS)
    x = smooth_images(n, 48, 40, seed=7)
    feats = _feats(net, x)
    seen = _gate_batches(net, lambda: net.anchor_head(feats))
    for level, inputs in enumerate(seen):
        chunk = trunk.front_chunk(feats[level])
        assert chunk == [1, 1, 2, 3, 3][level] or (chunk == n and n <= 3)
        sizes = sorted(t.shape[0] for t in inputs)
        assert sizes == sorted({chunk, n % chunk} - {0})
        for t in inputs:  # the distance map of (t, t): one value everywhere
            assert torch.equal(t, torch.full_like(t, t.flatten()[0].item()))


@pytest.mark.parametrize("n", [1, 3])
def test_loss_is_exactly_zero_with_zero_gradient_at_the_target_when_chunked(net, chunking, n):
    x = smooth_images(n, 48, 40, seed=20 + n)
    p = x.clone().requires_grad_(True)
    t = x.clone().requires_grad_(True)  # the anchor then has a graph too
    loss = topiq_fr_loss(p, t, net=net)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(p.grad) == 0 and torch.count_nonzero(t.grad) == 0
    y = distort(x, 3)
    assert topiq_fr_loss(y, x, net=net).item() > 0  # not zero everywhere


def test_anchor_with_a_graph_gives_the_generic_target_gradient(net):
    """With a target that requires grad the anchor's gradient equals the generic head's."""
    x = smooth_images(2, 48, 40, seed=31)
    grads = []
    for anchor_of in (lambda f: net.anchor_head(f).score, lambda f: net.head(f, f).score):
        t = x.clone().requires_grad_(True)
        anchor_of(net.backbone_features(t)).sum().backward()
        grads.append(t.grad)
    # The same sums in another order (the generic head adds the two parts' gradients and
    # the distance's exact zeros separately): equal to float32 rounding, not bitwise.
    assert ((grads[0] - grads[1]).norm() / grads[0].norm()).item() <= 1e-6


@pytest.fixture(scope="module")
def checkpointed(net):
    return copy.deepcopy(net).set_grad_checkpointing()


def test_anchor_with_checkpointing_matches(net, checkpointed):
    x = smooth_images(2, 48, 40, seed=33)
    grads = []
    for model in (net, checkpointed):
        t = x.clone().requires_grad_(True)
        model.anchor_head(model.backbone_features(t)).score.sum().backward()
        grads.append(t.grad)
    assert ((grads[0] - grads[1]).norm() / grads[0].norm()).item() <= 1e-6


# ------------------------------------------------------------------ with_target
def _count(monkeypatch, obj, name, counter):
    original = getattr(obj, name)

    def counting(*args, **kwargs):
        counter[name] = counter.get(name, 0) + 1
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, counting)


@pytest.mark.parametrize("n", [1, 2])
def test_with_target_computes_the_target_side_once(net, monkeypatch, n):
    loss_fn = TOPIQLoss(net=net)
    x = smooth_images(n, 48, 40, seed=40)
    counts: dict[str, int] = {}
    for name in ("backbone_features", "anchor_head", "head"):
        _count(monkeypatch, net, name, counts)
    fixed = loss_fn.with_target(x)
    assert counts == {"backbone_features": 1, "anchor_head": 1}
    counts.clear()
    for seed in range(3):
        p = distort(x, seed).requires_grad_(True)
        fixed(p).backward()
        fixed.score(p.detach())
    # Per call: the prediction's backbone and the score head only.
    assert counts == {"backbone_features": 6, "head": 6}


@pytest.mark.parametrize("objective", ["anchored", "score"])
def test_with_target_equals_the_plain_call_bitwise(net, objective):
    loss_fn = TOPIQLoss(net=net, objective=objective)
    x = smooth_images(2, 48, 40, seed=41)
    fixed = loss_fn.with_target(x)
    for pred in (distort(x, 5), x.clone()):
        p1, p2 = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
        l1, l2 = loss_fn(p1, x), fixed(p2)
        l1.backward()
        l2.backward()
        assert torch.equal(l1, l2)
        assert torch.equal(p1.grad, p2.grad)
    assert fixed(x).item() == 0.0 or objective == "score"
