"""The fused backbone is how the loss runs, never what is saved; with_target caches."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn as nn
from conftest import distort, smooth_images

from topiq_loss import CFANetFR, TOPIQLoss, topiq_fr, topiq_fr_loss, topiq_fr_target_features
from topiq_loss.backbone import fold_batchnorm


def _pair(seed: int = 0, n: int = 2, h: int = 48, w: int = 40):
    target = smooth_images(n, h, w, seed=seed)
    return distort(target, seed + 1), target


def test_fold_batchnorm_matches_conv_then_bn():
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=False).double()
    bn = nn.BatchNorm2d(7).double().eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.2, 3.0)
        bn.weight.normal_()
        bn.bias.normal_()
    x = torch.randn(2, 5, 11, 9, dtype=torch.float64)
    assert torch.allclose(fold_batchnorm(conv, bn)(x), bn(conv(x)), atol=1e-12)


def test_state_dict_keeps_official_keys_and_values(net, seeded_state):
    assert type(net.semantic_model._runner()).__name__ == "_FusedStages"
    state = net.state_dict()
    assert set(state) == set(seeded_state)
    for k, v in seeded_state.items():
        assert torch.equal(state[k], v), k
    # A loss that keeps the network in its state dict saves the same official tensors.
    kept = TOPIQLoss(net=copy.deepcopy(net), keep_in_state_dict=True).state_dict()
    assert {k.removeprefix("_net.") for k in kept} == set(seeded_state)


def test_fused_copy_follows_load_state_dict_and_in_place_edits(net, seeded_state):
    dist, target = _pair(3)
    other = copy.deepcopy(net)
    with torch.no_grad():
        base = other(dist, target)
        # In-place edit of a BatchNorm statistic: the fused copy must be rebuilt.
        other.semantic_model.bn1.running_mean.add_(0.5)
        edited = other(dist, target)
        assert (edited - base).abs().max() > 1e-4
        unfused = copy.deepcopy(other)
        unfused.semantic_model.set_fused(False)
        assert torch.allclose(edited, unfused(dist, target), atol=1e-5)
        # Loading the original weights restores the original scores.
        other.load_state_dict(seeded_state, strict=True)
        assert torch.allclose(other(dist, target), base, atol=1e-6)


def test_trainable_backbone_runs_the_modules_so_gradients_reach_them(seeded_state):
    model = CFANetFR()
    model.load_state_dict(seeded_state)
    assert model.semantic_model._runner() is model.semantic_model
    dist, target = _pair(5)
    model(dist, target).sum().backward()
    assert model.semantic_model.layer1[0].conv1.weight.grad is not None
    assert model.semantic_model.bn1.weight.grad is not None


def test_cast_refolds_in_new_dtype(net):
    n64 = copy.deepcopy(net).double()
    runner = n64.semantic_model._runner()
    assert runner.stem.weight.dtype == torch.float64
    n32 = n64.float()
    assert n32.semantic_model._runner().stem.weight.dtype == torch.float32


def test_pickle_leaves_out_the_fused_copy(net):
    net.semantic_model.prepare()
    blob = pickle.dumps(net)
    restored = pickle.loads(blob)
    assert restored.semantic_model.__dict__["_fused"] is None
    dist, target = _pair(7)
    with torch.no_grad():
        assert torch.allclose(restored(dist, target), net(dist, target), atol=1e-6)
    # The fused copy would add the backbone's ~94 MB again.
    assert len(blob) < 1.5 * sum(t.numel() * t.element_size() for t in net.state_dict().values())


# ------------------------------------------------------------------ with_target
def test_with_target_equals_the_plain_call(loss_fn):
    dist, target = _pair(11, n=3, h=45, w=52)
    fixed = loss_fn.with_target(target)
    p1 = dist.clone().requires_grad_(True)
    p2 = dist.clone().requires_grad_(True)
    l1, l2 = loss_fn(p1, target), fixed(p2)
    l1.backward()
    l2.backward()
    assert (l1 - l2).abs().item() <= 1e-6
    assert ((p1.grad - p2.grad).norm() / p1.grad.norm()).item() <= 1e-6
    with torch.no_grad():
        assert torch.allclose(fixed.score(dist), loss_fn.score(dist, target), atol=1e-6)


def test_with_target_batch_one_scores_many_candidates(loss_fn):
    dist, target = _pair(13, n=3, h=40, w=40)
    one = target[:1]
    fixed = loss_fn.with_target(one)
    with torch.no_grad():
        want = loss_fn.score(dist, one.expand(3, -1, -1, -1))
        assert torch.allclose(fixed.score(dist), want, atol=1e-6)


def test_with_target_functional_form_and_input_range(net):
    dist, target = _pair(15)
    feats = topiq_fr_target_features(target * 2 - 1, net=net, input_range=(-1, 1))
    assert all(not f.requires_grad for f in feats.features)
    with torch.no_grad():
        a = topiq_fr_loss(dist * 2 - 1, feats, net=net, input_range=(-1, 1), reduction="none", objective="score")
        b = 1 - topiq_fr(dist, target, net=net)
        c = topiq_fr_loss(dist * 2 - 1, feats, net=net, input_range=(-1, 1), reduction="none")
        d = topiq_fr_loss(dist, target, net=net, reduction="none")
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(c, d, atol=1e-6)


def test_with_target_refuses_mismatched_predictions(loss_fn):
    dist, target = _pair(17, n=2)
    fixed = loss_fn.with_target(target)
    with pytest.raises(ValueError, match=r"`pred` must have the cached target's shape \(2, 3, 48, 40\)"):
        fixed(dist[:, :, :40])
    with pytest.raises(ValueError, match="`pred` must have the cached target's shape"):
        fixed(torch.cat([dist, dist]))
    bad = dist.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="`pred` must be finite"):
        fixed(bad)
    with pytest.raises(ValueError, match="`target` must be finite"):
        loss_fn.with_target(bad)


def test_with_target_never_mutates_or_tracks_the_target(loss_fn):
    dist, target = _pair(19)
    target = target.requires_grad_(True)
    before = target.detach().clone()
    fixed = loss_fn.with_target(target)
    fixed(dist.requires_grad_(True)).backward()
    assert target.grad is None
    assert torch.equal(target.detach(), before)
