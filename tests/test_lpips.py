"""LPIPS and LPIPS+ losses: parity with the ``lpips`` package and pyiqa's ``lpips+`` /
``lpips-vgg+`` (same weights: random backbone + the package's trained linear layers),
gradients, zero at the reference, frozen network, weights paths and input errors."""

from __future__ import annotations

import urllib.error
import warnings

import pytest
import torch
from conftest import distort, smooth_images
from pyiqa_lpips_oracle import load_pyiqa_lpips

import topiq_loss.weights.lpips as lpips_nets
from topiq_loss import LPIPSLoss, LPIPSPlusLoss, RandomTransforms, WeightsError

lpips = pytest.importorskip("lpips", reason="`pip install lpips` (the [lpips] extra) for the LPIPS tests")

NETS = ["alex", "vgg"]


def _lpips_module(net: str) -> torch.nn.Module:
    """lpips.LPIPS with a seeded random backbone and the package's trained linear layers
    (no download); seeded so that every run tests the same network."""
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation
        torch.manual_seed(0)
        m = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    return m.eval().requires_grad_(False)


@pytest.fixture(scope="module", params=NETS)
def trio(request):
    """(lpips.LPIPS, pyiqa LPIPS with semantic_weight_layer=2 or None, net name), same weights."""
    lp = _lpips_module(request.param)
    arch = load_pyiqa_lpips()
    ref = None
    if arch is not None:
        ref = arch.LPIPS(pretrained=False, net=request.param, semantic_weight_layer=2)
        ref.load_state_dict(lp.state_dict(), strict=True)
        ref = ref.eval().requires_grad_(False)
    return lp, ref, request.param


@pytest.fixture(scope="module")
def alex():
    return _lpips_module("alex")


def _pyiqa(ref):
    if ref is None:
        pytest.skip("pyiqa not installed: `pip install --no-deps pyiqa==0.1.16` for the LPIPS+ parity tests")
    return ref


def _photo(h: int = 64, w: int = 56) -> torch.Tensor:
    skdata = pytest.importorskip("skimage.data", reason="scikit-image provides the photograph")
    img = torch.from_numpy(skdata.astronaut()[::4, ::4][:h, 20 : 20 + w].copy()).permute(2, 0, 1)
    return (img.float() / 255).unsqueeze(0)


def _pairs(net: str):
    """Batches 1-4, odd sizes and a photograph; smaller for VGG16 (~15x AlexNet's cost)."""
    if net == "vgg":
        yield smooth_images(2, 41, 37, seed=3), 4
        yield smooth_images(4, 32, 35, seed=5), 6
        yield _photo(40, 48), 7
        return
    yield smooth_images(1, 64, 64, seed=1), 2
    yield smooth_images(3, 67, 45, seed=3), 4
    yield smooth_images(4, 35, 47, seed=5), 6
    yield _photo(), 7


def test_lpips_plus_matches_pyiqa(trio):
    lp, ref, net = trio
    ref = _pyiqa(ref)
    mine = LPIPSPlusLoss.from_lpips(lp, reduction="none")
    for target, seed in _pairs(net):
        pred = distort(target, seed, 0.08)
        expected = ref(pred, target).flatten()  # pyiqa: (distorted, reference)
        got = mine(pred, target)
        assert got.shape == (len(target),)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # The weights come from the reference (second argument there, ours here): with half
    # the prediction flattened, swapping the roles changes the value well beyond tolerance.
    target = smooth_images(1, 64, 64, seed=1)
    flat = target.clone()
    flat[..., :32] = 0.5
    got = mine(flat, target)
    torch.testing.assert_close(got, ref(flat, target).flatten(), rtol=0, atol=1e-5)
    assert float((ref(target, flat).flatten() - got).abs().min()) > 1e-3


def test_plain_lpips_matches_the_package(trio):
    lp, _, net = trio
    mine = LPIPSLoss.from_lpips(lp, reduction="none")
    for target, seed in _pairs(net):
        pred = distort(target, seed, 0.08)
        torch.testing.assert_close(mine(pred, target), lp(pred, target, normalize=True).flatten(), rtol=0, atol=1e-5)
    lp.spatial = True  # same module, spatial output: its map is ours for plain LPIPS
    try:
        torch.testing.assert_close(mine.spatial_map(pred, target), lp(pred, target, normalize=True), rtol=0, atol=1e-5)
    finally:
        lp.spatial = False


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_gradients_match_the_references(trio):
    lp, ref, net = trio
    target = smooth_images(2, 48, 40, seed=11)
    pred = distort(target, 12, 0.1)
    cases = [(LPIPSLoss.from_lpips(lp), lambda p, t: lp(p, t, normalize=True).sum())]
    if ref is not None:
        cases.append((LPIPSPlusLoss.from_lpips(lp), lambda p, t: ref(p, t).sum()))
    for mine, oracle in cases:
        grads = []
        for fn in (lambda p, t, m=mine: m(p, t) * len(p), oracle):  # mean vs sum
            p, t = pred.clone().requires_grad_(True), target.clone().requires_grad_(True)
            fn(p, t).backward()
            grads.append((p.grad, t.grad))
        (gp, gt), (rp, rt) = grads
        assert _rel(gp, rp) < 1e-3 and _rel(gt, rt) < 1e-3


@pytest.mark.parametrize("cls", [LPIPSLoss, LPIPSPlusLoss])
def test_zero_at_the_reference_with_zero_gradient(trio, cls):
    lp, _, _ = trio
    loss_fn = cls.from_lpips(lp)
    x = smooth_images(2, 48, 40, seed=21).requires_grad_(True)
    loss = loss_fn(x, x.detach())
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(x.grad.abs().max()) == 0.0
    assert float(loss_fn.spatial_map(x, x).detach().abs().max()) == 0.0


def test_semantic_weighting_is_a_different_distance(alex):
    target = _photo(64, 64)
    pred = target.clone()
    pred[..., :32] = 0.5  # a local distortion: where it lies matters to the weighting
    plain, plus = LPIPSLoss.from_lpips(alex), LPIPSPlusLoss.from_lpips(alex)
    assert abs(float(plus(pred, target)) - float(plain(pred, target))) > 1e-4
    torch.testing.assert_close(LPIPSPlusLoss.from_lpips(alex, semantic_layer=None)(pred, target), plain(pred, target))
    assert float(LPIPSPlusLoss.from_lpips(alex, semantic_layer=4)(pred, target)) != float(plus(pred, target))
    assert LPIPSPlusLoss.higher_is_better is False and plus.semantic_layer == 2


def test_spatial_map_shape_and_mean(alex):
    target = smooth_images(2, 72, 64, seed=4)
    pred = distort(target, 5, 0.1)
    loss_fn = LPIPSPlusLoss.from_lpips(alex, reduction="none")
    m = loss_fn.spatial_map(pred, target)
    assert m.shape == (2, 1, 72, 64) and float(m.min()) >= 0
    torch.testing.assert_close(m.mean((1, 2, 3)), loss_fn(pred, target), rtol=0.1, atol=0)
    maps, weights = loss_fn.layer_maps(pred, target)  # exact at layer resolution
    layer = sum((s * w / w.mean((1, 2, 3), keepdim=True)).mean((1, 2, 3)) for s, w in zip(maps, weights, strict=True))
    torch.testing.assert_close(layer, loss_fn(pred, target), rtol=1e-5, atol=1e-7)


def _saved_count(loss_fn, pred, target) -> int:
    count = 0

    def pack(t):
        nonlocal count
        count += 1
        return t

    x = pred.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(x, target)
    return count


def test_options_keep_the_value(alex):
    target = smooth_images(2, 48, 48, seed=8)
    pred = distort(target, 9, 0.1)
    base = LPIPSPlusLoss.from_lpips(alex)
    p = pred.clone().requires_grad_(True)
    base(p, target).backward()
    ck = LPIPSPlusLoss.from_lpips(alex).set_grad_checkpointing()
    assert ck.checkpoint and ck.net.grad_checkpointing and not base.checkpoint
    q = pred.clone().requires_grad_(True)
    torch.testing.assert_close(ck(q, target), base(pred, target))
    ck(q, target).backward()
    torch.testing.assert_close(q.grad, p.grad)
    # ... and the setting is acted on: the checkpointed graph keeps fewer tensors.
    assert _saved_count(ck, pred, target) < _saved_count(LPIPSPlusLoss.from_lpips(alex), pred, target)
    # grey = the same grey on three channels; (-1, 1) inputs = the same images rescaled
    g_t, g_p = target[:, :1], pred[:, :1]
    torch.testing.assert_close(base(g_p, g_t), base(g_p.repeat(1, 3, 1, 1), g_t.repeat(1, 3, 1, 1)))
    signed = LPIPSPlusLoss.from_lpips(alex, input_range=(-1, 1))
    torch.testing.assert_close(signed(2 * pred - 1, 2 * target - 1), base(pred, target), rtol=1e-5, atol=1e-6)
    assert float(LPIPSPlusLoss.from_lpips(alex, loss_weight=2.5, reduction="sum")(pred, target)) == pytest.approx(
        2.5 * float(base.score(pred, target).sum()), rel=1e-6
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):  # backbone stays float32 by default
        amp = base(pred, target)
        fast = LPIPSPlusLoss.from_lpips(alex).set_backbone_autocast()(pred, target)
    assert amp.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the network's setting decides the taps' dtype
        x = 2 * pred - 1
        assert {f.dtype for f in base.net(x)} == {torch.float32}
        assert {f.dtype for f in LPIPSPlusLoss.from_lpips(alex).set_backbone_autocast().net(x)} == {torch.bfloat16}
    torch.testing.assert_close(amp, base(pred, target), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(fast) and abs(float(fast) - float(amp)) < 0.1 * float(amp)


def test_robust_mode(alex):
    target = smooth_images(2, 48, 40, seed=30)
    pred = distort(target, 31, 0.1)
    identity = RandomTransforms(max_shift=0, flips=False, transpose=False, downscale=False)
    same = LPIPSPlusLoss.from_lpips(alex, robust=identity, reduction="none")
    torch.testing.assert_close(same(pred, target), LPIPSPlusLoss.from_lpips(alex, reduction="none")(pred, target))
    rob = [LPIPSPlusLoss.from_lpips(alex, robust=RandomTransforms(samples=2, generator=torch.Generator().manual_seed(0))) for _ in range(2)]
    torch.testing.assert_close(rob[0](pred, target), rob[1](pred, target))  # seeded: reproducible
    assert float(rob[0](target, target)) == 0.0


def test_frozen_and_hidden(alex):
    loss_fn = LPIPSPlusLoss.from_lpips(alex)
    assert list(loss_fn.parameters()) == [] and loss_fn.state_dict() == {}
    assert not any(p.requires_grad for p in loss_fn.net.parameters())
    loss_fn.train()
    assert not loss_fn.training and not loss_fn.net.training
    loss_fn.to(torch.float64)
    assert loss_fn.net.dtype == torch.float64
    x = smooth_images(1, 40, 40, seed=2).double()
    assert loss_fn(distort(x, 1).double(), x).dtype == torch.float64
    kept = LPIPSPlusLoss.from_lpips(alex, keep_in_state_dict=True)
    assert any(k.startswith("_net.lins") for k in kept.state_dict())


def test_inputs_are_checked_and_left_alone(alex):
    loss_fn = LPIPSPlusLoss.from_lpips(alex)
    x = smooth_images(1, 40, 40, seed=2)
    before = x.clone()
    loss_fn(distort(x, 1), x)
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(x, x[..., :36])
    with pytest.raises(ValueError, match="at least 32x32"):
        loss_fn(x[..., :20], x[..., :20])
    with pytest.raises(ValueError, match="must be finite; got 1 NaN"):
        loss_fn(x.clone().index_put_((torch.tensor([0]),) * 4, torch.tensor(float("nan"))), x)
    with pytest.raises(TypeError, match="floating-point"):
        loss_fn(x.to(torch.uint8), x.to(torch.uint8))
    with pytest.raises(ValueError, match="`semantic_layer` must be None or an int in 0..4; got 5"):
        LPIPSPlusLoss.from_lpips(alex, semantic_layer=5)
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        LPIPSLoss.from_lpips(alex, reduction="avg")
    with pytest.raises(ValueError, match="`net` must be one of"):
        LPIPSLoss(net="squeeze", weights=None)
    with pytest.raises(TypeError, match="`network` must be an LPIPSNetwork; got Linear"):
        LPIPSLoss(network=torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="`module` must be an lpips.LPIPS module; got str"):
        LPIPSLoss.from_lpips("alex")


def test_weights_none_warns_and_keeps_the_global_rng():
    state = torch.get_rng_state()
    with pytest.warns(UserWarning, match="RANDOM backbone"):
        loss_fn = LPIPSPlusLoss(weights=None)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(float(w.min()) >= 0 for w in loss_fn.net.lin_weights())


def test_weights_from_a_saved_lpips_state_dict(alex, tmp_path):
    path = tmp_path / "lpips_alex.pth"
    torch.save(alex.state_dict(), path)
    x = smooth_images(1, 48, 48, seed=3)
    y = distort(x, 4)
    torch.testing.assert_close(LPIPSPlusLoss(weights=path)(y, x), LPIPSPlusLoss.from_lpips(alex)(y, x))
    with pytest.raises(WeightsError, match="not an LPIPS-vgg state dict"):
        LPIPSPlusLoss(net="vgg", weights=path)
    with pytest.raises(WeightsError, match="existing file"):
        LPIPSPlusLoss(weights=tmp_path / "missing.pth")


def test_default_weights_use_torchvision_and_the_package(alex, monkeypatch):
    import torchvision.models as tvm

    backbone = {k.replace("net.slice", "").split(".", 1)[1]: v for k, v in alex.state_dict().items() if k.startswith("net.")}
    asked = []

    def fake(self, progress=True):  # torchvision's download, answered from the lpips module
        asked.append(self.url)
        return {f"features.{k}": v for k, v in backbone.items()} | {"classifier.1.weight": torch.zeros(1)}

    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", fake)
    x = smooth_images(1, 48, 48, seed=3)
    torch.testing.assert_close(LPIPSPlusLoss()(distort(x, 4), x), LPIPSPlusLoss.from_lpips(alex)(distort(x, 4), x))
    assert asked == [tvm.AlexNet_Weights.IMAGENET1K_V1.url]


def test_offline_and_missing_package_errors_name_the_way_out(monkeypatch):
    import torchvision.models as tvm

    def offline(self, progress=True):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(WeightsError, match=r"vgg16-397923af\.pth.*lpips/weights/v0\.1/vgg\.pth.*weights=.*from_lpips"):
        LPIPSPlusLoss(net="vgg")
    monkeypatch.setattr(lpips_nets, "LPIPS_PACKAGE", "lpips_not_installed_here")
    with pytest.raises(WeightsError, match=r"pip install lpips.*weights=.*from_lpips"):
        LPIPSPlusLoss(net="alex")


@pytest.mark.parametrize("scale", [3e38, -3e38])
@pytest.mark.parametrize("call", ["forward", "spatial_map", "robust"])
def test_an_overflowing_distance_is_refused_like_topiq(alex, scale, call):
    """0.4: finite inputs of a huge scale gave a NaN distance (TOPIQ refused the same)."""
    robust = RandomTransforms(samples=2, generator=torch.Generator().manual_seed(0)) if call == "robust" else False
    loss = LPIPSPlusLoss.from_lpips(alex, robust=robust)
    x = smooth_images(1, 32, 32, seed=40)
    big = torch.full_like(x, scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # far out of range warns first
        with pytest.raises(ValueError, match="`pred` and `target` gave a non-finite LPIPS distance"):
            loss.spatial_map(big, x) if call == "spatial_map" else loss(big, x)
    assert torch.isfinite(loss(x, x.flip(-1)))  # an ordinary pair still scores
