"""Hardening round 3 (issue 19) on the loss side: whatever the parent does, the loss stays
frozen and initialised; robust options are checked up front; odd inputs name the argument."""

from __future__ import annotations

import copy
import pickle
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
from conftest import distort, smooth_images

from topiq_loss import GeneratorLoss, RandomTransforms, SRLoss, TOPIQLoss, _checks, adversarial_d_loss
from topiq_loss.integrations.basicsr import BasicSRTOPIQLoss


@pytest.fixture(scope="module")
def own_net(net):
    """A private copy of the session network: these tests move and reload it."""
    return copy.deepcopy(net)


@pytest.fixture(scope="module")
def pair():
    ref = smooth_images(2, 40, 48, seed=21)
    return distort(ref, 3), ref


def test_a_first_call_in_inference_mode_after_to_does_not_break_training(own_net, pair):
    loss_fn = TOPIQLoss(net=own_net).to(torch.float32)  # .to() drops the fused copy
    dist, ref = pair
    with torch.inference_mode():
        loss_fn.score(dist, ref)  # the fused copy is rebuilt here
    p = dist.clone().requires_grad_(True)
    loss_fn(p, ref).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


def test_a_parent_cannot_unfreeze_a_kept_network(own_net, pair):
    parent = nn.Module()
    parent.body = nn.Conv2d(3, 3, 1)
    parent.loss = TOPIQLoss(net=copy.deepcopy(own_net), keep_in_state_dict=True)
    parent.requires_grad_(True)
    trainable = [n for n, p in parent.named_parameters() if p.requires_grad]
    assert trainable == ["body.weight", "body.bias"]
    before = {k: v.clone() for k, v in parent.loss.state_dict().items()}
    opt = torch.optim.AdamW(parent.parameters(), lr=0.1, weight_decay=0.1)
    dist, ref = pair
    parent.loss(parent.body(dist), ref).backward()
    opt.step()
    after = parent.loss.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_to_empty_keeps_the_weights(own_net, pair):
    dist, ref = pair
    loss_fn = TOPIQLoss(net=copy.deepcopy(own_net))
    want = loss_fn.score(dist, ref)
    parent = nn.Sequential(nn.Conv2d(3, 3, 1))
    parent.loss = loss_fn
    parent.to_empty(device="cpu")
    assert torch.allclose(loss_fn.score(dist, ref), want, atol=1e-6)


def test_built_under_the_meta_device_then_to_empty(weights_file, own_net, pair):
    dist, ref = pair
    with torch.device("meta"):
        loss_fn = TOPIQLoss(weights=str(weights_file))
    loss_fn.to_empty(device="cpu")
    want = TOPIQLoss(net=own_net).score(dist, ref)
    assert torch.allclose(loss_fn.score(dist, ref), want, atol=1e-5)
    with torch.device("meta"):
        meta_net = type(own_net)()
    with pytest.raises(ValueError, match="meta device"):
        TOPIQLoss(net=meta_net)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_shift": -1}, "`max_shift` must be an int >= 0"),
        ({"max_shift": 2.5}, "`max_shift` must be an int >= 0"),
        ({"max_shift": True}, "`max_shift` must be an int >= 0"),
        ({"flips": "no"}, "`flips` must be True or False"),
        ({"colour": 1}, "`colour` must be True or False"),
    ],
)
def test_random_transforms_are_checked_at_construction(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        RandomTransforms(**kwargs)


def test_a_shift_larger_than_the_image_is_clamped(own_net):
    loss_fn = TOPIQLoss(
        net=own_net, robust=replace(RandomTransforms(max_shift=500), samples=6, generator=torch.Generator().manual_seed(0)),
    )
    x = smooth_images(2, 32, 40, seed=2)
    assert torch.isfinite(loss_fn.score(distort(x, 1), x)).all()


def test_pickled_robust_copies_draw_their_own_transforms(own_net):
    loss_fn = TOPIQLoss(net=own_net, robust=True)
    a, b = pickle.loads(pickle.dumps(loss_fn)), pickle.loads(pickle.dumps(loss_fn))
    assert not torch.equal(a.generator.get_state(), b.generator.get_state())
    seeded = TOPIQLoss(net=own_net, robust=RandomTransforms(generator=torch.Generator().manual_seed(5)))
    c = pickle.loads(pickle.dumps(seeded))
    assert torch.equal(c.generator.get_state(), seeded.generator.get_state())


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_and_meta_inputs_name_the_argument(loss_fn, dtype):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(TypeError, match="`pred` must be a floating-point tensor.*float8"):
        loss_fn(x.to(dtype), x)
    meta = torch.empty(1, 3, 32, 32, device="meta")
    with pytest.raises(ValueError, match="`pred` and `target` must be on the same device; got cpu and meta"):
        loss_fn(x, meta)
    with pytest.raises(ValueError, match="`target` is on the meta device"):
        _checks.check_values([(x, "pred"), (meta, "target")])


def test_nan_never_passes_as_a_pixel_or_adversarial_loss(loss_fn):
    x = torch.rand(2, 3, 16, 16)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="`sr` must be finite"):  # the caller's name (issue 37)
        SRLoss(scale=1, topiq=loss_fn, topiq_weight=0.0)(bad, x)
    logits = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="`fake_logits` must be finite"):
        adversarial_d_loss(logits, torch.full((2, 1), float("nan")))
    with pytest.raises(ValueError, match="`weight` must be finite"):
        BasicSRTOPIQLoss(topiq=loss_fn)(smooth_images(2, 32, 32, 1), smooth_images(2, 32, 32, 2),
                                        weight=torch.tensor([1.0, float("nan")]))


def test_logits_batch_must_match_the_images(loss_fn):
    x = smooth_images(2, 32, 32, seed=4)
    with pytest.raises(ValueError, match="`fake_logits` must have one row per image"):
        GeneratorLoss(topiq=loss_fn)(x, x, torch.zeros(3, 1))


def test_basicsr_loss_refuses_what_it_would_ignore(loss_fn):
    with pytest.raises(TypeError, match="`topiq` must be a TOPIQLoss"):
        BasicSRTOPIQLoss(topiq=nn.L1Loss())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`input_range=.*differs"):
        BasicSRTOPIQLoss(topiq=loss_fn, input_range=(-1.0, 1.0))
