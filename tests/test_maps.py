"""Quality maps: shapes, ranges, properties that hold for any weights, the `map` command."""

from __future__ import annotations

import pytest
import torch
from conftest import distort, smooth_images
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from topiq_loss import LEVELS, CFANetFR, TOPIQLoss, quality_maps, render_maps
from topiq_loss.cli.app import main, to_pil


@pytest.fixture(scope="module")
def other_net() -> CFANetFR:
    """A second, differently initialised network: the properties must not depend on weights."""
    torch.manual_seed(1234)
    return CFANetFR().requires_grad_(False).eval()


def test_shapes_ranges_and_score(loss_fn):
    ref = smooth_images(2, 40, 72, seed=41)
    dist = distort(ref, 42)
    maps = loss_fn.quality_maps(dist, ref)
    assert len(maps.gates) == len(LEVELS) == 5 and len(maps.cross_attention) == 4
    for m in maps.gates + maps.cross_attention:
        assert m.shape == (2, 1, 40, 72) and m.dtype == torch.float32
        assert torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
    with torch.no_grad():
        assert torch.allclose(maps.score, loss_fn.score(dist, ref), atol=1e-6)


def test_maps_carry_no_graph(loss_fn):
    ref = smooth_images(1, 32, 32, seed=43)
    dist = distort(ref, 44).requires_grad_(True)
    maps = loss_fn.quality_maps(dist, ref)
    assert not any(m.requires_grad for m in maps.gates + maps.cross_attention)
    assert torch.is_grad_enabled()


def test_upsampling_stays_within_native_range(net):
    ref = smooth_images(1, 64, 96, seed=45)
    dist = distort(ref, 46)
    with torch.no_grad():
        native = net.forward_features(dist, ref, need_maps=True)
    maps = quality_maps(dist, ref, net=net)
    for up, nat in zip(maps.gates, native.gates, strict=True):
        assert up.min() >= nat.min() - 1e-6 and up.max() <= nat.max() + 1e-6
    for up, nat in zip(maps.cross_attention, reversed(native.cross_attention), strict=True):
        assert up.min() >= nat.min() - 1e-6 and up.max() <= nat.max() + 1e-6


@given(h=st.integers(32, 80), w=st.integers(32, 80), seed=st.integers(0, 2**16))
def test_cross_attention_is_a_distribution_over_locations(net, h, w, seed):
    ref = smooth_images(1, h, w, seed=seed)
    with torch.no_grad():
        feats = net.forward_features(distort(ref, seed + 1), ref, need_maps=True)
    for c in feats.cross_attention:
        assert torch.allclose(c.sum(dim=(1, 2)), torch.ones(1), atol=1e-5)


@given(h=st.integers(40, 96), w=st.integers(40, 96), seed=st.integers(0, 2**16))
def test_identical_images_give_uniform_stem_gate_for_any_weights(net, other_net, h, w, seed):
    # pred == target makes |F_dist - F_ref| = sqrt(eps) everywhere, whatever the image, so
    # the gate net sees a constant input; only its two 3x3 zero-padded convs make the
    # two outermost rows/columns differ.
    img = smooth_images(1, h, w, seed=seed)
    for model in (net, other_net):
        with torch.no_grad():
            gate = model.forward_features(img, img.clone(), need_maps=True).gates[0]
        inner = gate[..., 2:-2, 2:-2]
        assert inner.numel() > 0 and (inner.max() - inner.min()) <= 1e-6
        # ... and the same constant for any other image compared with itself.
        other = smooth_images(1, h, w, seed=seed + 1)
        with torch.no_grad():
            gate2 = model.forward_features(other, other, need_maps=True).gates[0]
        assert torch.allclose(gate, gate2, atol=1e-6)


def test_distortion_makes_the_stem_gate_non_uniform(net):
    # The companion of the property above: it can fail, and does for a distorted image.
    img = smooth_images(1, 64, 64, seed=47)
    dist = img.clone()
    dist[..., :, :32] = distort(img[..., :, :32], 48, level=0.3)
    with torch.no_grad():
        gate = net.forward_features(dist, img, need_maps=True).gates[0]
    inner = gate[..., 2:-2, 2:-2]
    assert (inner.max() - inner.min()) > 1e-3


def test_render_maps_rgb_and_grey(loss_fn):
    ref = smooth_images(1, 48, 64, seed=49)
    dist = distort(ref, 50)
    img = render_maps(dist, ref, loss_fn.quality_maps(dist, ref), panel=64)
    assert img.mode == "RGB" and img.size == (5 * 64, 3 * (48 + 14))
    grey_ref, grey_dist = ref[:, :1], dist[:, :1]
    img = render_maps(grey_dist, grey_ref, loss_fn.quality_maps(grey_dist, grey_ref), panel=64)
    assert img.size == (5 * 64, 3 * (48 + 14))


def test_map_command_writes_a_png(tmp_path, weights_file, capsys):
    ref = smooth_images(1, 40, 48, seed=51)
    to_pil(distort(ref, 52)).save(tmp_path / "d.png")
    to_pil(ref).save(tmp_path / "r.png")
    out = tmp_path / "map.png"
    args = ["map", str(tmp_path / "d.png"), str(tmp_path / "r.png"), "-o", str(out)]
    assert main([*args, "--weights", str(weights_file), "--panel", "96", "--format", "plain"]) == 0
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (5 * 96, 3 * (80 + 14))
    printed = capsys.readouterr().out
    score = TOPIQLoss(weights=str(weights_file)).score
    with torch.no_grad():
        from topiq_loss.cli.app import read_image

        want = score(read_image(tmp_path / "d.png"), read_image(tmp_path / "r.png")).item()
    assert float(printed.split()[0]) == pytest.approx(want, abs=1e-6)
