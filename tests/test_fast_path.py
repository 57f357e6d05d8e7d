"""The fused backbone is how the loss runs, never what is saved; with_target caches."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import distort, smooth_images

from topiq_loss import CFANetFR, TOPIQLoss, topiq_fr, topiq_fr_loss, topiq_fr_target_features
from topiq_loss.models.backbone import fold_batchnorm


def _pair(seed: int = 0, n: int = 2, h: int = 48, w: int = 40):
    target = smooth_images(n, h, w, seed=seed)
    return distort(target, seed + 1), target


def test_fold_batchnorm_matches_conv_then_bn():
    torch.manual_seed(0)
    for bias in (False, True):
        conv = nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=bias).double()
        bn = nn.BatchNorm2d(7).double().eval()
        with torch.no_grad():
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.2, 3.0)
            bn.weight.normal_()
            bn.bias.normal_()
        x = torch.randn(2, 5, 11, 9, dtype=torch.float64)
        w, b = fold_batchnorm(conv, bn)
        assert torch.allclose(F.conv2d(x, w, b, stride=2, padding=1), bn(conv(x)), atol=1e-12)


def test_state_dict_keeps_official_keys_and_values(net, seeded_state):
    state = net.state_dict()
    assert set(state) == set(seeded_state)
    for k, v in seeded_state.items():
        assert torch.equal(state[k], v), k
    # Nothing but the official tensors: no hidden second copy of the backbone.
    held = sum(t.numel() for t in [*net.parameters(), *net.buffers()])
    assert held == sum(v.numel() for v in seeded_state.values()) + 6  # + the ImageNet mean/std
    # A loss that keeps the network in its state dict saves the same official tensors.
    kept = TOPIQLoss(net=copy.deepcopy(net), keep_in_state_dict=True).state_dict()
    assert {k.removeprefix("_net.") for k in kept} == set(seeded_state)


def _unfused_score(net, dist, target):
    plain = copy.deepcopy(net)
    plain.semantic_model.set_fused(False)
    return plain(dist, target)


@pytest.mark.parametrize(
    "edit",
    [
        # The edits a version counter never sees (issue #19 item 1) and those it does.
        lambda sm: sm.conv1.weight.data.mul_(0),
        lambda sm: sm.layer2[1].conv2.weight.data.mul_(1.5),
        lambda sm: sm.bn1.running_mean.data.add_(0.5),
        lambda sm: setattr(sm.layer1[0].bn1, "running_var", sm.layer1[0].bn1.running_var * 4),
        lambda sm: setattr(sm.layer3[0].downsample[1], "weight", nn.Parameter(torch.full((1024,), 0.3))),
        lambda sm: sm.layer4[2].__setattr__("bn3", nn.BatchNorm2d(2048).eval()),
        lambda sm: sm.bn1.running_mean.add_(0.5),
    ],
    ids=["conv1-data-zero", "conv-data-scale", "bn-mean-data", "bn-var-rebound", "bn-param-replaced",
         "bn-module-replaced", "bn-mean-in-place"],
)
def test_any_edit_to_the_network_gives_the_unfused_score(net, edit):
    """Whatever changes the backbone's tensors or modules, the score is the unfused network's."""
    dist, target = _pair(3)
    other = copy.deepcopy(net)
    with torch.no_grad():
        base = other(dist, target)
        edit(other.semantic_model)
        edited = other(dist, target)
        assert (edited - base).abs().max() > 1e-4  # the edit matters ...
        assert torch.allclose(edited, _unfused_score(other, dist, target), atol=1e-5)  # ... and is seen


def test_a_loss_sees_data_edits_of_its_network(net):
    dist, target = _pair(4)
    loss_fn = TOPIQLoss(net=copy.deepcopy(net))
    with torch.no_grad():
        before = loss_fn.score(dist, target)
        loss_fn.net.semantic_model.conv1.weight.data.mul_(0)
        after = loss_fn.score(dist, target)
        assert not torch.allclose(before, after, atol=1e-4)
        assert torch.allclose(after, _unfused_score(loss_fn.net, dist, target), atol=1e-5)


def test_load_state_dict_restores_the_scores(net, seeded_state):
    dist, target = _pair(3)
    other = copy.deepcopy(net)
    with torch.no_grad():
        base = other(dist, target)
        other.semantic_model.bn1.running_mean.add_(0.5)
        other.load_state_dict(seeded_state, strict=True)
        assert torch.allclose(other(dist, target), base, atol=1e-6)


def test_trainable_backbone_gets_the_gradients_of_the_unfused_modules(seeded_state):
    model = CFANetFR()
    model.load_state_dict(seeded_state)
    model.double()
    plain = copy.deepcopy(model)
    plain.semantic_model.set_fused(False)
    dist, target = (x.double() for x in _pair(5, n=1, h=40, w=36))
    model(dist, target).sum().backward()
    plain(dist, target).sum().backward()
    for name in ("layer1.0.conv1.weight", "bn1.weight", "layer3.0.downsample.1.bias"):
        got = model.semantic_model.get_parameter(name).grad
        want = plain.semantic_model.get_parameter(name).grad
        assert got is not None and want is not None, name
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-10), name


def test_inference_mode_after_a_move_leaves_training_working(net):
    """Issue #19 item 3: nothing is cached, so an inference-mode call leaves no inference tensors."""
    dist, target = _pair(6)
    loss_fn = TOPIQLoss(net=copy.deepcopy(net)).to(torch.float32)
    with torch.inference_mode():
        loss_fn.score(dist, target)
    p = dist.clone().requires_grad_(True)
    loss_fn(p, target).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


def test_pickle_holds_only_the_official_tensors(net):
    blob = pickle.dumps(net)
    restored = pickle.loads(blob)
    dist, target = _pair(7)
    with torch.no_grad():
        assert torch.allclose(restored(dist, target), net(dist, target), atol=1e-6)
    # A second (fused) copy would add the backbone's ~94 MB again.
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
