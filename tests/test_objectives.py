"""The anchored objective: minimised at the target, for FR, NR-with-target and the adapters.

Properties (hypothesis, any shape >= 32 px, batch 1-4): the anchored loss is >= 0, is
exactly 0 with an exactly zero gradient at ``pred == target``, does not change when
the batch is duplicated, and descent from the target stays there; the score
objective is not minimised at the target (it drifts), so the two objectives differ.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import distort, smooth_images
from hypothesis import given, settings
from hypothesis import strategies as st
from seeded_weights import seeded_state_dict

from topiq_loss import (
    CFANetNR,
    DenoiseLoss,
    GeneratorLoss,
    RandomTransforms,
    SRLoss,
    TOPIQLoss,
    TOPIQNRLoss,
    topiq_fr_loss,
    topiq_nr_loss,
)
from topiq_loss.functional.objectives import ANCHOR_EPS, anchored_penalty
from topiq_loss.integrations.basicsr import BasicSRTOPIQLoss


@pytest.fixture(scope="module")
def nr_net() -> CFANetNR:
    model = CFANetNR()
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed=7), strict=True)
    return model.requires_grad_(False).eval()


@pytest.fixture(scope="module")
def score_loss(net) -> TOPIQLoss:
    return TOPIQLoss(net=net, objective="score")


@st.composite
def images(draw, max_batch: int = 4, max_side: int = 56):
    n = draw(st.integers(1, max_batch))
    h = draw(st.integers(32, max_side))
    w = draw(st.integers(32, max_side))
    seed = draw(st.integers(0, 2**31 - 1))
    return smooth_images(n, h, w, seed)


def _loss_and_grad(fn, pred: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = pred.clone().requires_grad_(True)
    loss = fn(p, *rest)
    loss.backward()
    return loss.detach(), p.grad


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


# --- the penalty ---------------------------------------------------------------------------


def test_penalty_is_even_nonnegative_zero_at_zero_and_slope_one_far_away():
    d = torch.cat([torch.linspace(-1, 1, 200, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    d.requires_grad_(True)
    rho = anchored_penalty(d)
    assert (rho >= 0).all()
    assert torch.equal(rho, anchored_penalty(-d))
    (g,) = torch.autograd.grad(rho.sum(), d)
    zero = d.detach() == 0
    assert rho[zero].item() == 0 and g[zero].item() == 0
    far = d.detach().abs() > 50 * ANCHOR_EPS
    assert torch.allclose(g[far].abs(), torch.ones_like(g[far]), atol=1e-3)
    ref = torch.sqrt(d.detach() ** 2 + ANCHOR_EPS**2) - ANCHOR_EPS
    assert torch.allclose(rho.detach(), ref, atol=1e-12)


# --- full reference ------------------------------------------------------------------------


@settings(max_examples=8)
@given(images())
def test_anchored_fr_is_zero_with_zero_gradient_at_the_target(loss_fn, x):
    loss, grad = _loss_and_grad(loss_fn, x, x)
    assert loss.item() == 0.0
    assert torch.count_nonzero(grad) == 0


@settings(max_examples=6)
@given(images(max_batch=3, max_side=48), st.integers(0, 2**31 - 1))
def test_anchored_fr_is_nonnegative_and_duplication_keeps_the_mean(net, x, seed):
    y = distort(x, seed, level=0.15)
    values = topiq_fr_loss(y, x, net=net, reduction="none")
    assert (values >= 0).all()
    doubled = topiq_fr_loss(torch.cat([y, y]), torch.cat([x, x]), net=net)
    # A batch of 2 reorders float32 sums in the backbone: each score moves by ~1e-6, and
    # the penalty is 1-Lipschitz in the score difference, so that is the tolerance's scale
    # (a relative one fails where the penalty itself is ~1e-4, a difference of close scores).
    assert torch.allclose(doubled, values.mean(), rtol=1e-4, atol=1e-5)


def test_anchored_penalises_overshoot_and_pulls_back(net, loss_fn, score_loss):
    target = smooth_images(1, 48, 56, seed=3)
    pred = target.clone().requires_grad_(True)
    opt = torch.optim.Adam([pred], lr=5e-3)
    for _ in range(8):  # climb the published score past the target's own
        opt.zero_grad()
        score_loss(pred, target).backward()
        opt.step()
    pred = pred.detach()
    s_pred = score_loss.score(pred, target).item()
    s_anchor = score_loss.score(target, target).item()
    assert s_pred > s_anchor  # an image scored "better" than the reference
    assert score_loss(pred, target).item() < score_loss(target, target).item()  # the score objective rewards it
    loss, grad = _loss_and_grad(loss_fn, pred, target)
    assert loss.item() > 0  # the anchored one does not
    step = pred - 1e-3 * grad / grad.norm()
    assert loss_fn.score(step, target).item() < s_pred  # descent lowers the overshoot


def test_descent_from_the_target_stays_there_and_the_score_objective_drifts(loss_fn, score_loss):
    target = smooth_images(1, 48, 48, seed=11)
    finals = {}
    for name, fn in (("anchored", loss_fn), ("score", score_loss)):
        x = target.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=2e-3)
        for _ in range(30):
            opt.zero_grad()
            fn(x, target).backward()
            opt.step()
        finals[name] = psnr(x.detach(), target)
    assert finals["anchored"] >= 60
    assert finals["score"] < 50  # fails if the two objectives were the same


def test_with_target_and_robust_keep_the_zero(net, loss_fn):
    x = smooth_images(2, 40, 52, seed=5)
    fixed = loss_fn.with_target(x)
    loss, grad = _loss_and_grad(fixed, x)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0
    y = distort(x, 1)
    assert torch.allclose(fixed(y), loss_fn(y, x), atol=1e-6)
    robust = TOPIQLoss(net=net, robust=RandomTransforms(samples=2, generator=torch.Generator().manual_seed(0)))
    loss, grad = _loss_and_grad(robust, x, x)  # one transform draw for both terms
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0
    assert robust(y, x).item() > 0


def test_score_objective_reproduces_the_published_score(loss_fn, score_loss):
    x = smooth_images(3, 40, 48, seed=2)
    y = distort(x, 4)
    assert torch.allclose(score_loss(y, x), (1 - loss_fn.score(y, x)).mean(), atol=1e-6)
    assert score_loss.objective == "score" and loss_fn.objective == "anchored"


def test_objective_is_checked(net):
    with pytest.raises(ValueError, match="`objective`.*anchored"):
        TOPIQLoss(net=net, objective="distance")  # type: ignore[arg-type]


# --- no reference --------------------------------------------------------------------------


@settings(max_examples=6)
@given(images(max_batch=3, max_side=48))
def test_nr_with_target_is_zero_at_the_target_and_nonnegative(nr_net, x):
    nr = TOPIQNRLoss(net=nr_net)
    loss, grad = _loss_and_grad(nr, x, x)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0
    y = distort(x, 9, level=0.2)
    assert (nr.loss_values(y, x) >= 0).all()


def test_nr_alone_keeps_the_score_mapping_and_score_refuses_a_target(nr_net):
    x = smooth_images(2, 48, 48, seed=8)
    nr = TOPIQNRLoss(net=nr_net)
    assert torch.allclose(nr(x), (1 - nr.score(x)).mean(), atol=1e-6)
    fn = topiq_nr_loss(x, x, net=nr_net)
    assert fn.item() == 0.0
    with pytest.raises(ValueError, match="objective='score'"):
        TOPIQNRLoss(net=nr_net, objective="score")(x, x)
    robust = TOPIQNRLoss(net=nr_net, robust=RandomTransforms(generator=torch.Generator().manual_seed(1)))
    assert robust(x, x).item() == 0.0


# --- adapters ------------------------------------------------------------------------------


def test_adapters_are_zero_with_zero_gradient_at_the_target(loss_fn, nr_net):
    hr = smooth_images(2, 48, 48, seed=12)
    nr = TOPIQNRLoss(net=nr_net, reduction="none")
    cases = [
        (SRLoss(scale=2, topiq=loss_fn, nr=nr, nr_weight=0.1), (hr,)),
        (DenoiseLoss(topiq=loss_fn), (hr,)),
        (BasicSRTOPIQLoss(topiq=loss_fn), (hr,)),
    ]
    for fn, rest in cases:
        loss, grad = _loss_and_grad(fn, hr, *rest)
        assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0, type(fn).__name__
    g = GeneratorLoss(topiq=loss_fn, nr=nr, nr_weight=0.1)
    _, logs = g(hr, hr, torch.zeros(2, 1))
    assert logs["topiq"].item() == 0.0 and logs["nr"].item() == 0.0 and logs["pixel"].item() == 0.0


def test_adapters_follow_the_objective_and_refuse_a_conflict(net, score_loss):
    hr = smooth_images(2, 40, 40, seed=13)
    sr = distort(hr, 2)
    shared = SRLoss(scale=1, topiq=score_loss, pixel=None)
    assert torch.allclose(shared(sr, hr), score_loss(sr, hr), atol=1e-6)
    with pytest.raises(ValueError, match="objective"):
        SRLoss(scale=1, topiq=score_loss, objective="anchored")
    with pytest.raises(ValueError, match="objective"):
        BasicSRTOPIQLoss(topiq=score_loss, objective="anchored")


def test_every_loss_says_lower_is_better(loss_fn, nr_net):
    for obj in (loss_fn, TOPIQNRLoss(net=nr_net), SRLoss(scale=1, topiq=loss_fn), BasicSRTOPIQLoss(topiq=loss_fn)):
        assert obj.higher_is_better is False


def test_an_lpips_term_in_the_adapters_is_zero_at_the_target(loss_fn):
    from topiq_loss import LPIPSPlusLoss

    with pytest.warns(UserWarning, match="(?i)random"):
        lp = LPIPSPlusLoss(weights=None, reduction="none")
    hr = smooth_images(2, 40, 40, seed=17)
    sr = distort(hr, 3)
    mixed = SRLoss(scale=1, topiq=loss_fn, topiq_weight=0.0, lpips_weight=0.5, lpips=lp, reduction="none")
    with torch.no_grad():
        terms = mixed.terms(sr, hr)
        assert torch.allclose(terms["total"], terms["pixel"] + 0.5 * lp.score(sr, hr), atol=1e-6)
    loss, grad = _loss_and_grad(lambda p, t: mixed(p, t).sum(), hr, hr)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0
    with pytest.raises(TypeError, match="`lpips` must be an LPIPSLoss"):
        SRLoss(scale=1, topiq=loss_fn, lpips_weight=0.1, lpips=loss_fn)  # type: ignore[arg-type]
