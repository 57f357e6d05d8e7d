"""TOPIQLoss / functional API: values, reductions, gradients, input checks."""

from __future__ import annotations

import pytest
import torch
from conftest import distort, smooth_images

from topiq_loss import CFANetFR, TOPIQLoss, topiq_fr, topiq_fr_loss
from topiq_loss.functional.objectives import anchored_penalty


@pytest.fixture(scope="module")
def pair():
    ref = smooth_images(3, 40, 48, seed=11)
    return distort(ref, seed=12), ref


def test_score_objective_is_one_minus_score(loss_fn, pair):
    dist, ref = pair
    with torch.no_grad():
        score = loss_fn.score(dist, ref)
        loss = TOPIQLoss(net=loss_fn.net, reduction="none", objective="score")(dist, ref)
    assert score.shape == (3,)
    assert torch.allclose(loss, 1 - score)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions_and_module_equals_functional(net, pair, reduction):
    dist, ref = pair
    mod = TOPIQLoss(net=net, reduction=reduction, loss_weight=0.5)
    with torch.no_grad():
        a = mod(dist, ref)
        b = topiq_fr_loss(dist, ref, net=net, reduction=reduction, loss_weight=0.5)
        # anchored: the penalty of the target's own score minus the prediction's
        per = 0.5 * anchored_penalty(topiq_fr(ref, ref, net=net) - topiq_fr(dist, ref, net=net))
    want = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    assert a.shape == want.shape
    assert torch.allclose(a, b) and torch.allclose(a, want, atol=1e-6)


def test_lower_loss_for_milder_distortion(loss_fn):
    ref = smooth_images(2, 48, 48, seed=13)
    with torch.no_grad():
        mild = loss_fn(distort(ref, 1, 0.02), ref)
        strong = loss_fn(distort(ref, 1, 0.3), ref)
    assert mild < strong


def test_gradients_reach_pred_and_target_only(loss_fn, pair):
    dist, ref = pair
    p = dist.clone().requires_grad_(True)
    t = ref.clone().requires_grad_(True)
    loss_fn(p, t).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert t.grad is not None and t.grad.abs().sum() > 0
    assert all(q.grad is None and not q.requires_grad for q in loss_fn.net.parameters())
    assert list(loss_fn.parameters()) == []


def test_target_without_grad_takes_nograd_branch_same_result(net, pair):
    dist, ref = pair
    p1 = dist.clone().requires_grad_(True)
    topiq_fr(p1, ref, net=net).sum().backward()
    p2 = dist.clone().requires_grad_(True)
    topiq_fr(p2, ref.clone().requires_grad_(True), net=net).sum().backward()
    assert torch.allclose(p1.grad, p2.grad, rtol=1e-4, atol=1e-7)


def test_grey_input_equals_repeated_rgb(net):
    ref = smooth_images(1, 40, 40, seed=14)[:, :1]
    dist = distort(ref, 2)
    with torch.no_grad():
        a = topiq_fr(dist, ref, net=net)
        b = topiq_fr(dist.repeat(1, 3, 1, 1), ref.repeat(1, 3, 1, 1), net=net)
    assert torch.equal(a, b)


def test_input_range_minus_one_one(net, pair):
    dist, ref = pair
    with torch.no_grad():
        a = topiq_fr(dist, ref, net=net)
        b = topiq_fr(dist * 2 - 1, ref * 2 - 1, net=net, input_range=(-1, 1))
    assert torch.allclose(a, b, atol=1e-5)


def test_float64_and_half_inputs_score_like_float32(net, pair):
    dist, ref = pair
    with torch.no_grad():
        a = topiq_fr(dist, ref, net=net)
        b = topiq_fr(dist.double(), ref.double(), net=net)
    assert b.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-6)


def _img(*shape, dtype=torch.float32):
    return torch.rand(*shape).to(dtype)


BAD = [
    ("not a tensor", lambda: ([[0.5]], _img(1, 3, 32, 32)), TypeError, r"`pred` must be a torch.Tensor; got list"),
    ("int dtype", lambda: (_img(1, 3, 32, 32).mul(255).to(torch.uint8), _img(1, 3, 32, 32)), TypeError, r"`pred` must be a floating-point.*got dtype torch.uint8"),
    ("bool dtype", lambda: (_img(1, 3, 32, 32), _img(1, 3, 32, 32) > 0.5), TypeError, r"`target` must be a floating-point.*torch.bool"),
    ("complex", lambda: (_img(1, 3, 32, 32).to(torch.complex64), _img(1, 3, 32, 32)), TypeError, r"`pred`.*complex64"),
    ("3-D", lambda: (_img(3, 32, 32), _img(3, 32, 32)), ValueError, r"`pred` must have shape \(N, C, H, W\).*got \(3, 32, 32\) \(3-D\)"),
    ("channels", lambda: (_img(1, 4, 32, 32), _img(1, 4, 32, 32)), ValueError, r"`pred` must have 1 \(grey\) or 3 \(RGB\) channels.*\(1, 4, 32, 32\)"),
    ("too small", lambda: (_img(1, 3, 31, 64), _img(1, 3, 31, 64)), ValueError, r"at least 32x32.*\(1, 3, 31, 64\)"),
    ("empty", lambda: (_img(0, 3, 32, 32), _img(0, 3, 32, 32)), ValueError, r"`pred` is an empty batch"),
    ("shape mismatch", lambda: (_img(1, 3, 32, 32), _img(1, 3, 32, 40)), ValueError, r"same shape; got \(1, 3, 32, 32\) and \(1, 3, 32, 40\)"),
    ("nan", lambda: (_img(1, 3, 32, 32).index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), _img(1, 3, 32, 32)), ValueError, r"`pred` must be finite; got 3072 NaN and 0 inf"),
    ("inf", lambda: (_img(1, 3, 32, 32), torch.full((1, 3, 32, 32), float("inf"))), ValueError, r"`target` must be finite; got 0 NaN and 3072 inf"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_inputs_raise_clear_errors(loss_fn, case):
    _, make, exc, match = case
    pred, target = make()
    with pytest.raises(exc, match=match):
        loss_fn(pred, target)


def test_device_mismatch_with_network(loss_fn):
    meta = torch.empty(1, 3, 32, 32, device="meta")
    with pytest.raises(ValueError, match=r"same device; got meta and cpu"):
        loss_fn(meta, torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"`pred` is on meta but the TOPIQ network is on cpu"):
        topiq_fr(meta, torch.empty(1, 3, 32, 32, device="meta"), net=loss_fn.net)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"reduction": "avg"}, ValueError, r"`reduction` must be one of \('mean', 'sum', 'none'\); got 'avg'"),
        ({"loss_weight": "1"}, TypeError, r"`loss_weight` must be a real number; got str"),
        ({"input_range": (1, 0)}, ValueError, r"`input_range` must be \(low, high\)"),
        ({"net": torch.nn.Linear(2, 2)}, TypeError, r"`net` must be a CFANetFR; got Linear"),
    ],
)
def test_bad_options(net, kwargs, exc, match):
    kwargs = {"net": net, **kwargs}
    with pytest.raises(exc, match=match):
        TOPIQLoss(**kwargs)


def test_unknown_weights_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"`weights` must be one of \['kadid', 'pipal'\].*got 'koniq'"):
        TOPIQLoss(weights="koniq")


def test_random_weights_warn():
    with pytest.warns(UserWarning, match="RANDOM weights, scores are meaningless"):
        TOPIQLoss(weights=None)


def test_inputs_not_modified(loss_fn, pair):
    dist, ref = pair
    d, r = dist.clone(), ref.clone()
    grey = ref[:, :1].clone()
    loss_fn(d, r)
    TOPIQLoss(net=loss_fn.net, input_range=(-1, 1))(d, r)
    loss_fn(grey, grey.clone())
    assert torch.equal(d, dist) and torch.equal(r, ref) and torch.equal(grey, ref[:, :1])


def test_state_dict_keys_match_official_list(shared_keys):
    net = CFANetFR()
    sd = net.state_dict()
    assert set(sd) == set(shared_keys)
    for k, (shape, dtype) in shared_keys.items():
        assert list(sd[k].shape) == shape and str(sd[k].dtype) == f"torch.{dtype}", k


@pytest.fixture(scope="module")
def shared_keys():
    from conftest import official_keys

    return {name: (list(shape), dtype) for name, (shape, dtype) in official_keys("cfanet_fr_state_dict_keys.txt").items()}


def test_backbone_layout_options_keep_scores(net):
    """channels_last / unfolded BatchNorm change the arithmetic's order, not the model."""
    import copy

    target = smooth_images(2, 48, 40, seed=15)
    pred = distort(target, 16)
    with torch.no_grad():
        want = topiq_fr(pred, target, net=net)
        for fused, channels_last, layout in (
            (True, True, torch.channels_last),
            (True, False, torch.contiguous_format),
            (False, None, torch.contiguous_format),
        ):
            loss = TOPIQLoss(net=copy.deepcopy(net))
            loss.net.semantic_model.set_fused(fused, channels_last)
            seen: list[torch.Tensor] = []
            loss.net.semantic_model.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o[0]))
            assert torch.allclose(loss.score(pred, target), want, atol=1e-5), (fused, channels_last)
            assert seen[0].is_contiguous(memory_format=layout), (fused, channels_last)
    assert net.semantic_model.fused_enabled  # the shared network was not changed
