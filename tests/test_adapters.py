"""SR, denoising and GAN adapters (the BasicSR plug: tests/test_integrations.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import distort, smooth_images
from hypothesis import given
from hypothesis import strategies as st

from topiq_loss import (
    DenoiseLoss,
    GeneratorLoss,
    SRLoss,
    TOPIQLoss,
    adversarial_d_loss,
    adversarial_g_loss,
    pixel_loss,
)


@pytest.fixture(scope="module")
def topiq(net) -> TOPIQLoss:
    # The published score as the term keeps the mixing formulas below simple to state;
    # tests/test_objectives.py covers the anchored default of the adapters.
    return TOPIQLoss(net=net, objective="score")


@pytest.fixture(scope="module")
def hr() -> torch.Tensor:
    return smooth_images(2, 48, 56, seed=31)


def _one_minus_score(topiq, a, b):
    return 1.0 - topiq.score(a, b)


# ----------------------------------------------------------------------------- pixel


def test_pixel_loss_kinds(hr):
    sr = distort(hr, 1)
    d = sr - hr
    assert torch.allclose(pixel_loss(sr, hr, "l1"), d.abs().mean())
    assert torch.allclose(pixel_loss(sr, hr, "mse"), d.square().mean())
    want = torch.sqrt(d.square() + 1e-6).flatten(1).mean(1)
    assert torch.allclose(pixel_loss(sr, hr, "charbonnier", reduction="none"), want)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        pixel_loss(sr, hr, "l3")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- SR


def test_sr_loss_is_weighted_sum_of_terms(topiq, hr):
    sr = distort(hr, 2).requires_grad_(True)
    loss_fn = SRLoss(scale=2, pixel="charbonnier", pixel_weight=0.7, topiq_weight=0.3, topiq=topiq)
    loss = loss_fn(sr, hr)
    want = 0.7 * pixel_loss(sr, hr, "charbonnier") + 0.3 * _one_minus_score(topiq, sr, hr).mean()
    assert torch.allclose(loss, want, atol=1e-6)
    terms = loss_fn.terms(sr, hr)
    assert set(terms) == {"pixel", "topiq", "total"}
    loss.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0


def test_sr_loss_reduction_none_and_sum(topiq, hr):
    sr = distort(hr, 3)
    none = SRLoss(2, reduction="none", topiq=topiq)(sr, hr)
    assert none.shape == (2,)
    assert torch.allclose(SRLoss(2, reduction="sum", topiq=topiq)(sr, hr), none.sum())
    per = [SRLoss(2, topiq=topiq)(sr[i : i + 1], hr[i : i + 1]) for i in range(2)]
    assert torch.allclose(none, torch.stack(per), atol=1e-6)


def test_sr_loss_crops_target_off_by_rounding(topiq):
    hr = smooth_images(1, 67, 65, seed=4)  # x2 of a 33x32 LR image gives 66x64
    sr = distort(hr[..., :66, :64], 5)
    loss_fn = SRLoss(scale=2, topiq=topiq)
    assert torch.allclose(loss_fn(sr, hr), loss_fn(sr, hr[..., :66, :64].contiguous()))
    # The other way round (HR rounded down, SR one pixel larger) crops the output.
    small = hr[..., :65, :63]
    assert torch.allclose(loss_fn(sr, small), loss_fn(sr[..., :65, :63], small))


# Sizes from 40 px: every rounding at scale 4 keeps the crop >= 37 px (the network needs
# 32); larger images only cost time, the rounding arithmetic is the same.
@given(h=st.integers(40, 66), w=st.integers(40, 66), scale=st.sampled_from([2, 3, 4]), ceil=st.booleans())
def test_sr_loss_accepts_any_rounding_of_any_hr_size(topiq, h, w, scale, ceil):
    # An LR image of floor(h/scale) or ceil(h/scale) pixels upscaled by `scale` is within
    # `scale` pixels of the HR size, and the loss compares exactly the common crop.
    hr = smooth_images(1, h, w, seed=h * 100 + w)
    rnd = (lambda n: -(-n // scale)) if ceil else (lambda n: n // scale)
    sh, sw = rnd(h) * scale, rnd(w) * scale
    sr = distort(F.interpolate(hr, size=(sh, sw), mode="bilinear", align_corners=False), 1)
    loss_fn = SRLoss(scale=scale, topiq=topiq)
    ch, cw = min(h, sh), min(w, sw)
    want = loss_fn(sr[..., :ch, :cw].contiguous(), hr[..., :ch, :cw].contiguous())
    assert torch.allclose(loss_fn(sr, hr), want, atol=1e-6)


def test_sr_loss_refuses_real_size_mismatch(topiq):
    sr = smooth_images(1, 64, 64, seed=6)
    with pytest.raises(ValueError, match=r"differ by more than the rounding of scale=2"):
        SRLoss(scale=2, topiq=topiq)(sr, smooth_images(1, 66, 64, seed=6))
    with pytest.raises(ValueError, match="same batch size and channels"):
        SRLoss(scale=2, topiq=topiq)(sr, smooth_images(2, 64, 64, seed=6))


def test_sr_loss_shave(topiq):
    hr = smooth_images(1, 48, 48, seed=7)
    sr = distort(hr, 8)
    loss_fn = SRLoss(scale=4, shave=True, topiq=topiq)
    want = SRLoss(scale=4, topiq=topiq)(sr[..., 4:-4, 4:-4], hr[..., 4:-4, 4:-4])
    assert torch.allclose(loss_fn(sr, hr), want)
    small = smooth_images(1, 38, 48, seed=9)
    with pytest.raises(ValueError, match=r"after shaving 4 border pixels.*30x40.*at least 32x32"):
        loss_fn(small, small)


def test_sr_loss_pixel_only_and_topiq_only(topiq, hr):
    sr = distort(hr, 10)
    pix = SRLoss(2, topiq_weight=0.0, topiq=topiq).terms(sr, hr)
    assert set(pix) == {"pixel", "total"} and torch.allclose(pix["total"], pixel_loss(sr, hr))
    tq = SRLoss(2, pixel=None, topiq=topiq).terms(sr, hr)
    assert set(tq) == {"topiq", "total"}
    assert torch.allclose(tq["total"], _one_minus_score(topiq, sr, hr).mean())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale": 0}, "`scale` must be an integer >= 1"),
        ({"scale": 2.0}, "`scale` must be an integer >= 1"),
        ({"scale": 2, "pixel": "l3"}, "`pixel` must be one of"),
        ({"scale": 2, "topiq_weight": -1}, "`topiq_weight` must be a finite real number >= 0"),
        ({"scale": 2, "reduction": "avg"}, "`reduction` must be one of"),
        ({"scale": 2, "loss_weight": 2.0}, "`loss_weight` is not a TOPIQLoss option here"),
        ({"scale": 2, "pixel": None, "topiq_weight": 0.0}, "nothing to compute"),
    ],
)
def test_sr_loss_bad_options(topiq, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SRLoss(topiq=topiq, **kwargs)


def test_adapters_hold_no_parameters_and_stay_eval(topiq):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1))
    model.loss = SRLoss(2, topiq=topiq)
    model.train()
    assert not model.loss.training and not topiq.net.training
    assert len(list(model.parameters())) == 2
    assert set(model.state_dict()) == {"0.weight", "0.bias"}


def test_adapter_builds_its_own_topiq_from_options(weights_file):
    loss_fn = SRLoss(2, weights=str(weights_file), input_range=(-1.0, 1.0))
    assert loss_fn.topiq.input_range == (-1.0, 1.0)
    with pytest.raises(ValueError, match="either `topiq` or TOPIQLoss options"):
        SRLoss(2, topiq=loss_fn.topiq, weights=str(weights_file))
    with pytest.raises(TypeError, match="`topiq` must be a TOPIQLoss"):
        SRLoss(2, topiq=object())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- denoising


def test_denoise_residual_equals_clean_estimate(topiq, hr):
    noisy = distort(hr, 11, level=0.1)
    residual = (noisy - distort(hr, 12, level=0.02)).requires_grad_(True)
    res_fn = DenoiseLoss("residual", pixel_weight=0.5, topiq=topiq)
    clean_fn = DenoiseLoss("clean", pixel_weight=0.5, topiq=topiq)
    loss = res_fn(residual, hr, noisy)
    assert torch.allclose(loss, clean_fn(noisy - residual, hr), atol=1e-6)
    loss.backward()
    assert torch.isfinite(residual.grad).all() and residual.grad.abs().sum() > 0


def test_denoise_errors(topiq, hr):
    with pytest.raises(ValueError, match="`noisy` is required"):
        DenoiseLoss("residual", topiq=topiq)(hr, hr)
    with pytest.raises(ValueError, match="`noisy` must have the shape of `output`"):
        DenoiseLoss("residual", topiq=topiq)(hr, hr, hr[:1])
    with pytest.raises(ValueError, match="`predicts` must be one of"):
        DenoiseLoss("noise", topiq=topiq)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`output` must be finite"):
        DenoiseLoss(topiq=topiq)(torch.full_like(hr, float("nan")), hr)


# ----------------------------------------------------------------------------- GAN


def _bce(x, target):
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, float(target)))


def test_adversarial_losses_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(6, 1, generator=g), torch.randn(6, 1, generator=g)
    assert torch.allclose(adversarial_g_loss(fake, kind="nsgan"), _bce(fake, 1))
    assert torch.allclose(adversarial_d_loss(real, fake, "nsgan"), _bce(real, 1) + _bce(fake, 0))
    assert torch.allclose(adversarial_g_loss(fake, kind="hinge"), -fake.mean())
    assert torch.allclose(
        adversarial_d_loss(real, fake, "hinge"), F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    )
    # ESRGAN's relativistic average losses.
    g_ra = 0.5 * (_bce(real - fake.mean(), 0) + _bce(fake - real.mean(), 1))
    d_ra = 0.5 * (_bce(real - fake.mean(), 1) + _bce(fake - real.mean(), 0))
    assert torch.allclose(adversarial_g_loss(fake, real, "ragan"), g_ra)
    assert torch.allclose(adversarial_d_loss(real, fake, "ragan"), d_ra)
    with pytest.raises(ValueError, match="`real_logits` is required"):
        adversarial_g_loss(fake, kind="ragan")
    with pytest.raises(ValueError, match="`fake_logits` must be a non-empty floating-point"):
        adversarial_g_loss(torch.ones(3, dtype=torch.long))


@pytest.mark.parametrize("kind", ["nsgan", "hinge", "ragan"])
def test_generator_loss_total_and_logged_terms(topiq, hr, kind):
    fake = distort(hr, 13).requires_grad_(True)
    fake_logits = (fake.mean(dim=(1, 2, 3)) * 3 - 1).unsqueeze(1)
    real_logits = torch.tensor([[0.5], [1.5]])
    g_loss = GeneratorLoss(kind, adversarial_weight=0.1, pixel_weight=0.2, topiq_weight=0.7, topiq=topiq)
    total, logs = g_loss(fake, hr, fake_logits, real_logits)
    assert set(logs) == {"pixel", "topiq", "adversarial", "total"}
    assert all(not v.requires_grad for v in logs.values())
    want = 0.2 * logs["pixel"] + 0.7 * logs["topiq"] + 0.1 * logs["adversarial"]
    assert torch.allclose(total, want, atol=1e-6) and torch.allclose(logs["total"], total)
    assert torch.allclose(logs["adversarial"], adversarial_g_loss(fake_logits, real_logits, kind))
    total.backward()
    assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0


def test_generator_loss_checks_images(topiq, hr):
    with pytest.raises(ValueError, match="`fake` and `real` must have the same shape"):
        GeneratorLoss(topiq=topiq)(hr, hr[:1], torch.zeros(2, 1))
    with pytest.raises(ValueError, match="`adversarial` must be one of"):
        GeneratorLoss("wgan", topiq=topiq)  # type: ignore[arg-type]
