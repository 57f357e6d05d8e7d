"""The held tensors are protected from edits (issue 37, finding 5).

(a) Cached target features follow the network they came from: ``TargetFeatures``
carries a stamp of the network's tensors (identity, version counter, memory), so a
``with_target`` object recomputes, and the functional API refuses, after a
``load_state_dict``, an in-place edit, an assigning load or a cast. In 0.5 a
``with_target`` object kept scoring with the old features.

(b) A kept network (``keep_in_state_dict=True``) is out of reach of a parent's module
walk: ``for m in model.modules(): spectral_norm(m)`` (and weight norm, any
parametrization, ``apply``) reaches only the parent's own layers, while the network's
tensors still go in and out of the state dict. In 0.5 the walk parametrized the loss's
convolutions and the score moved silently.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize
from conftest import distort, smooth_images

from topiq_loss import LPIPSLoss, TOPIQLoss, TOPIQNRLoss, topiq_fr_loss, topiq_fr_target_features


@pytest.fixture(scope="module")
def fr_net():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TOPIQLoss(weights="random").net


@pytest.fixture(scope="module")
def images():
    hr = smooth_images(2, 40, 40, seed=11)
    return distort(hr, 12, 0.15), hr


def _other_state(net):
    """A state dict of ``net``'s shape with other values."""
    g = torch.Generator().manual_seed(3)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g, dtype=v.dtype) if v.is_floating_point() else v
            for k, v in net.state_dict().items()}


def _load(net):
    net.load_state_dict(_other_state(net))


def _load_assign(net):
    net.load_state_dict(_other_state(net), assign=True)


def _edit_in_place(net):
    with torch.no_grad():
        net.score_linear[-1].weight.mul_(3.0)


def _edit_backbone_in_place(net):
    with torch.no_grad():
        net.semantic_model.layer4[-1].bn3.running_var.mul_(4.0)


EDITS = {"load_state_dict": _load, "assign": _load_assign, "in_place": _edit_in_place,
         "backbone_in_place": _edit_backbone_in_place}


@pytest.mark.parametrize("edit", list(EDITS))
def test_with_target_follows_the_network(fr_net, images, edit):
    loss_fn = TOPIQLoss(net=copy.deepcopy(fr_net))
    pred, hr = images
    fixed = loss_fn.with_target(hr)
    before = fixed(pred)
    EDITS[edit](loss_fn.net)
    want = loss_fn(pred, hr)
    assert not torch.allclose(want, before, atol=1e-6)  # the edit matters
    torch.testing.assert_close(fixed(pred), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(fixed.score(pred), loss_fn.score(pred, hr), atol=1e-6, rtol=0)


def test_with_target_follows_a_cast(fr_net, images):
    loss_fn = TOPIQLoss(net=copy.deepcopy(fr_net))
    pred, hr = images
    fixed = loss_fn.with_target(hr)
    loss_fn.double()
    got = fixed(pred.double())
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, loss_fn(pred.double(), hr.double()), atol=1e-9, rtol=0)


@pytest.mark.parametrize("edit", ["load_state_dict", "in_place"])
def test_functional_target_features_refuse_a_changed_network(fr_net, images, edit):
    net = copy.deepcopy(fr_net)
    pred, hr = images
    feats = topiq_fr_target_features(hr, net=net)
    topiq_fr_loss(pred, feats, net=net)  # fits
    EDITS[edit](net)
    with pytest.raises(ValueError, match="before the network's tensors changed"):
        topiq_fr_loss(pred, feats, net=net)


def test_an_unchanged_network_keeps_the_cached_features(fr_net, images):
    loss_fn = TOPIQLoss(net=copy.deepcopy(fr_net))
    pred, hr = images
    fixed = loss_fn.with_target(hr)
    held = fixed.target
    p = pred.clone().requires_grad_(True)
    fixed(p).backward()
    assert fixed.target is held  # scoring (and its backward) changes no tensor of the network


def _spectral_norm_walk(model):
    for m in list(model.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(m)


def _old_spectral_norm_walk(model):
    for m in list(model.modules()):
        if isinstance(m, nn.Conv2d):
            nn.utils.spectral_norm(m)


def _weight_norm_walk(model):
    for m in list(model.modules()):
        if isinstance(m, nn.Conv2d):
            nn.utils.parametrizations.weight_norm(m)


class _Scale(nn.Module):
    def forward(self, w):
        return 2 * w


def _parametrize_walk(model):
    for m in list(model.modules()):
        if isinstance(m, nn.Conv2d):
            parametrize.register_parametrization(m, "weight", _Scale())


def _apply_init(model):
    def init(m):
        if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(getattr(m, "weight", None), torch.Tensor):
            with torch.no_grad():
                m.weight.normal_()

    model.apply(init)


WALKS = {"spectral_norm": _spectral_norm_walk, "old_spectral_norm": _old_spectral_norm_walk,
         "weight_norm": _weight_norm_walk, "parametrize": _parametrize_walk, "apply": _apply_init}


@pytest.mark.parametrize("walk", list(WALKS))
def test_a_parents_module_walk_does_not_reach_a_kept_network(fr_net, images, walk):
    parent = nn.Module()
    parent.body = nn.Conv2d(3, 3, 1)
    parent.loss = TOPIQLoss(net=copy.deepcopy(fr_net), keep_in_state_dict=True)
    pred, hr = images
    want = parent.loss(pred, hr)
    keys = set(parent.loss.state_dict())
    WALKS[walk](parent)
    assert torch.equal(parent.loss(pred, hr), want)
    assert not any(parametrize.is_parametrized(m) for m in parent.loss.net.modules())
    assert set(parent.loss.state_dict()) == keys


def test_a_kept_network_is_saved_and_loaded_through_the_state_dict(fr_net, images):
    kept = TOPIQLoss(net=copy.deepcopy(fr_net), keep_in_state_dict=True)
    sd = kept.state_dict()
    assert set(sd) == {f"_net.{k}" for k in fr_net.state_dict()}
    assert list(kept.modules()) == [kept] and list(kept.buffers()) == []
    other = TOPIQLoss(net=copy.deepcopy(fr_net), keep_in_state_dict=True)
    other.load_state_dict({k: v + 1 if k == "_net.h_emb" else v for k, v in sd.items()})
    assert torch.equal(other.net.h_emb, fr_net.h_emb + 1)
    with pytest.raises(RuntimeError, match="Missing key"):
        other.load_state_dict({k: v for k, v in sd.items() if k != "_net.w_emb"})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        other.load_state_dict({**sd, "_net.extra": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="size mismatch"):
        other.load_state_dict({**sd, "_net.h_emb": torch.zeros(1)})
    other.load_state_dict({k: nn.Parameter(v) if v.is_floating_point() else v for k, v in sd.items()}, assign=True)
    assert list(other.net.parameters()) == []


@pytest.mark.parametrize("kind", ["nr", "lpips"])
def test_other_kept_networks_are_out_of_reach_too(kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = (TOPIQNRLoss(weights="random", resize=None, keep_in_state_dict=True) if kind == "nr"
                else LPIPSLoss(weights=None, keep_in_state_dict=True))
    parent = nn.Sequential(nn.Conv2d(3, 3, 1))
    parent.loss = loss
    x = smooth_images(1, 32, 32, seed=4)
    want = loss(x) if kind == "nr" else loss(distort(x, 5), x)
    _spectral_norm_walk(parent)
    got = loss(x) if kind == "nr" else loss(distort(x, 5), x)
    assert torch.equal(got, want)
    assert all(k.startswith("_net.") for k in loss.state_dict()) and loss.state_dict()


def test_a_pickled_target_computes_its_features_for_its_own_network(fr_net, images):
    import pickle

    loss_fn = TOPIQLoss(net=copy.deepcopy(fr_net))
    pred, hr = images
    copied = pickle.loads(pickle.dumps(loss_fn.with_target(hr)))
    torch.testing.assert_close(copied(pred), copied.loss(pred, hr), atol=1e-6, rtol=0)


def test_holding_a_network_again_keeps_one_state_dict_round_trip(fr_net):
    """A metric holds a loss's network again when it moves it: the hooks stay single."""
    kept = TOPIQLoss(net=copy.deepcopy(fr_net), keep_in_state_dict=True)
    kept._hold(copy.deepcopy(fr_net), True)
    sd = kept.state_dict()
    kept.load_state_dict(sd, strict=True)
    assert len(sd) == len(fr_net.state_dict())
