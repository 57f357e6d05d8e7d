"""Robust mode: the random-transformation ensemble of the TOPIQ losses."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import distort, smooth_images

from topiq_loss import CFANetNR, RandomTransforms, SRLoss, TOPIQLoss, TOPIQNRLoss, topiq_fr
from topiq_loss.functional.robust import _draw, _transform_one

NONE = RandomTransforms(max_shift=0, flips=False, transpose=False, downscale=False)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pair(n=3, h=72, w=48, seed=0):
    target = smooth_images(n, h, w, seed=seed)
    return distort(target, seed + 1), target


def test_no_transform_is_the_plain_score(net):
    dist, target = _pair()
    robust = TOPIQLoss(net=net, robust=replace(NONE, generator=_gen(0)))
    with torch.no_grad():
        assert torch.allclose(robust.score(dist, target), topiq_fr(dist, target, net=net), atol=1e-6)


def test_seeded_generator_reproduces_and_seeds_differ(net):
    dist, target = _pair()
    with torch.no_grad():
        a = TOPIQLoss(net=net, robust=RandomTransforms(generator=_gen(1))).score(dist, target)
        b = TOPIQLoss(net=net, robust=RandomTransforms(generator=_gen(1))).score(dist, target)
        c = TOPIQLoss(net=net, robust=RandomTransforms(generator=_gen(2))).score(dist, target)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-4)


def test_per_sample_transforms_with_shape_groups(net):
    """Non-square images, transposes and downscales drawn per sample: each sample's
    ensemble score is the plain score of its own transformed pair."""
    dist, target = _pair(n=4, h=72, w=66, seed=3)
    cfg = RandomTransforms()
    with torch.no_grad():
        got = TOPIQLoss(net=net, robust=replace(cfg, generator=_gen(5))).score(dist, target)
        params = _draw(4, 72, 66, cfg, _gen(5))
        assert params["transpose"].any() and not params["transpose"].all()  # mixed shapes
        for i in range(4):
            d = _transform_one(dist[i : i + 1], params, i, 0.0)
            t = _transform_one(target[i : i + 1], params, i, 0.0)
            assert torch.allclose(got[i], topiq_fr(d, t, net=net)[0], atol=1e-5)


def test_transforms_keep_size_and_respect_the_minimum():
    x = torch.rand(1, 3, 40, 50)
    params = {
        "dy": torch.tensor([7]), "dx": torch.tensor([3]), "hflip": torch.tensor([True]),
        "vflip": torch.tensor([False]), "transpose": torch.tensor([False]), "down": torch.tensor([False]),
    }
    y = _transform_one(x, params, 0, 0.0)
    assert y.shape == x.shape
    # Translation by (7, 3) with reflect padding, then a horizontal flip.
    assert torch.equal(y[..., 7:, :47], x[..., :33, :47].flip(-1))
    assert torch.equal(y[..., 0, :47], x[..., 7, :47].flip(-1))  # reflected row
    small = _draw(64, 63, 200, RandomTransforms(), _gen(0))
    assert not small["down"].any()  # 63 // 2 < 32: never downscaled
    big = _draw(64, 64, 200, RandomTransforms(), _gen(0))
    assert big["down"].any()


def test_samples_average_successive_draws(net):
    dist, target = _pair(n=2, seed=7)
    with torch.no_grad():
        three = TOPIQLoss(net=net, robust=RandomTransforms(samples=3, generator=_gen(9))).score(dist, target)
        one = TOPIQLoss(net=net, robust=RandomTransforms(generator=_gen(9)))
        mean = sum(one.score(dist, target) for _ in range(3)) / 3
    assert torch.allclose(three, mean, atol=1e-6)


def test_loss_and_gradients_flow_and_global_rng_untouched(net):
    dist, target = _pair(n=2, seed=11)
    loss_fn = TOPIQLoss(net=net, robust=True)
    rng = torch.get_rng_state()
    p = dist.clone().requires_grad_(True)
    loss = loss_fn(p, target)
    loss.backward()
    assert torch.equal(torch.get_rng_state(), rng)
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert loss.shape == ()


def test_repr_says_robust(net):
    assert "robust=True, robust_samples=3" in repr(TOPIQLoss(net=net, robust=RandomTransforms(samples=3)))
    assert "robust" not in repr(TOPIQLoss(net=net))


def test_with_target_is_refused_in_robust_mode(net):
    dist, target = _pair(n=1)
    with pytest.raises(ValueError, match="`robust=True` transforms the target"):
        TOPIQLoss(net=net, robust=True).with_target(target)


def test_bad_options_and_inputs_are_named(net):
    with pytest.raises(TypeError, match="`robust` must be a bool or a RandomTransforms; got str"):
        TOPIQLoss(net=net, robust="yes")
    with pytest.raises(ValueError, match="`samples` must be an int >= 1"):
        TOPIQLoss(net=net, robust=RandomTransforms(samples=0))
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator"):
        TOPIQLoss(net=net, robust=RandomTransforms(generator=3))
    loss_fn = TOPIQLoss(net=net, robust=True)
    with pytest.raises(ValueError, match="`pred` must have shape"):
        loss_fn(torch.rand(3, 40, 40), torch.rand(3, 40, 40))
    bad = torch.rand(1, 3, 40, 40)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="`target` must be finite"):
        loss_fn(torch.rand(1, 3, 40, 40), bad)


def test_adapters_inherit_the_robust_score(net):
    dist, target = _pair(n=2, h=64, w=64, seed=13)
    robust = TOPIQLoss(net=net, robust=RandomTransforms(generator=_gen(3)), objective="score")
    sr = SRLoss(scale=2, topiq=robust, reduction="none")
    with torch.no_grad():
        got = sr.terms(dist, target)["topiq"]
        want = 1 - TOPIQLoss(net=net, robust=RandomTransforms(generator=_gen(3))).score(dist, target)
        plain = 1 - topiq_fr(dist, target, net=net)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-4)


def test_colour_transforms_opt_in(net):
    dist, target = _pair(n=2, seed=15)
    with torch.no_grad():
        geo = TOPIQLoss(net=net, robust=replace(NONE, generator=_gen(4))).score(dist, target)
        colour = TOPIQLoss(
            net=net, robust=replace(RandomTransforms(0, False, False, False, colour=True), generator=_gen(4)),
        ).score(dist, target)
    assert not torch.allclose(geo, colour, atol=1e-4)


def test_no_reference_loss_has_the_same_mode():
    torch.manual_seed(0)
    nr_net = CFANetNR()
    loss_fn = TOPIQNRLoss(net=nr_net, robust=RandomTransforms(samples=2, generator=_gen(1)))
    img = smooth_images(2, 64, 48, seed=17).requires_grad_(True)
    loss_fn(img).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    with torch.no_grad():
        a = loss_fn.score(img)
        plain = TOPIQNRLoss(net=nr_net).score(img)
        none = TOPIQNRLoss(net=nr_net, robust=NONE).score(img)
    assert a.shape == (2,) and not torch.allclose(a, plain, atol=1e-5)
    assert torch.allclose(none, plain, atol=1e-6)


def test_colour_gain_is_the_same_transform_in_either_input_range(net):
    """Issue #19 item 17: the gain scales intensity above the range's low end, so a
    (-1, 1) loss and a (0, 1) loss with the same draws give the same ensemble score."""
    dist, target = _pair(n=2, seed=21)
    colour = RandomTransforms(0, False, False, False, colour=True)
    with torch.no_grad():
        unit = TOPIQLoss(net=net, robust=replace(colour, generator=_gen(6))).score(dist, target)
        signed = TOPIQLoss(net=net, input_range=(-1, 1), robust=replace(colour, generator=_gen(6))).score(
            dist * 2 - 1, target * 2 - 1
        )
    assert torch.allclose(unit, signed, atol=1e-5)


def test_robust_settings_are_one_argument(net):
    gen = _gen(8)
    loss_fn = TOPIQLoss(net=net, robust=RandomTransforms(samples=4, generator=gen))
    assert loss_fn.robust and loss_fn.robust_samples == 4 and loss_fn.generator is gen
    assert not TOPIQLoss(net=net).robust
    with pytest.raises(TypeError, match="robust_samples"):
        TOPIQLoss(net=net, robust=True, robust_samples=2)  # the old spelling is gone, by name
