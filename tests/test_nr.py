"""No-reference TOPIQ: CFANet-NR (quality) and the AVA aesthetics layout."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from accuracy_cases import CASE_MAX, GEOMEAN_MAX, SCORE_TOL, geomean, rel_error
from conftest import distort, official_keys, smooth_images
from pyiqa_oracle import build_reference_nr
from seeded_weights import seeded_state_dict
from weights_server import checkpoint_bytes

from topiq_loss import (
    NR_WEIGHTS,
    CFANetFR,
    CFANetNR,
    TOPIQLoss,
    TOPIQNRLoss,
    WeightsError,
    topiq_nr,
    topiq_nr_loss,
)
from topiq_loss.functional.nr import resize_short_side
from topiq_loss.functional.objectives import anchored_penalty

LAYOUTS = {"quality": (CFANetNR, "cfanet_nr_state_dict_keys.txt"), "aesthetics": (CFANetNR.aesthetics, "cfanet_iaa_res50_state_dict_keys.txt")}
SHAPES = [(1, 3, 32, 32), (2, 3, 45, 67), (3, 3, 97, 61), (1, 3, 128, 200)]


@pytest.fixture(scope="session", params=sorted(LAYOUTS))
def layout(request):
    return request.param


@pytest.fixture(scope="session")
def nr_states() -> dict[str, dict[str, torch.Tensor]]:
    return {k: seeded_state_dict(build().state_dict(), seed=7) for k, (build, _) in LAYOUTS.items()}


@pytest.fixture(scope="session")
def nr_nets(nr_states) -> dict[str, CFANetNR]:
    nets = {}
    for k, (build, _) in LAYOUTS.items():
        net = build()
        net.load_state_dict(nr_states[k], strict=True)
        nets[k] = net.requires_grad_(False).eval()
    return nets


@pytest.fixture(scope="session")
def nr_files(tmp_path_factory, nr_states) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("nr_weights")
    out = {}
    for k, state in nr_states.items():
        out[k] = folder / f"seeded_untrained_{k}.pth"
        out[k].write_bytes(checkpoint_bytes(state))
    return out


def _reference(aesthetics: bool, state, test_img_size=None):
    ref = build_reference_nr(aesthetics, test_img_size=test_img_size)
    if ref is None:
        pytest.skip("pyiqa (and timm) not installed: `pip install timm && pip install --no-deps pyiqa==0.1.16`")
    ref.load_state_dict(state, strict=True)
    return ref.eval()


def _score_grad(fn, x):
    x = x.clone().requires_grad_(True)
    s = fn(x).reshape(-1)
    (g,) = torch.autograd.grad(s.sum(), x)
    return s.detach(), g


def test_state_dict_keys_match_the_official_layouts(layout):
    build, filename = LAYOUTS[layout]
    want = {name: list(shape) for name, (shape, _) in official_keys(filename).items()}
    got = {k: list(v.shape) for k, v in build().state_dict().items()}
    assert got == want


def test_scores_match_pyiqa(nr_nets, nr_states, layout):
    """Scores within 1e-4 of pyiqa's CFANet(use_ref=False) in float32, odd/non-square shapes."""
    aesthetics = layout == "aesthetics"
    ref = _reference(aesthetics, nr_states[layout])
    with torch.no_grad():
        for i, shape in enumerate(SHAPES):
            x = distort(smooth_images(shape[0], shape[2], shape[3], seed=70 + i), 80 + i)
            want = ref(x).reshape(-1)
            got = topiq_nr(x, net=nr_nets[layout])
            assert got.shape == (shape[0],)
            assert (got - want).abs().max().item() <= SCORE_TOL, shape
    if aesthetics:
        assert ((got >= 1) & (got <= 10)).all()


def test_eval_resize_matches_pyiqa(nr_nets, nr_states, layout):
    """resize=384 is pyiqa's eval-mode ``test_img_size=384`` (FLIVE, AVA)."""
    ref = _reference(layout == "aesthetics", nr_states[layout], test_img_size=384)
    x = distort(smooth_images(1, 120, 90, seed=90), 91)
    with torch.no_grad():
        want = ref(x).reshape(-1)
        got = topiq_nr(x, net=nr_nets[layout], resize=384)
        plain = topiq_nr(x, net=nr_nets[layout])
    assert (got - want).abs().max().item() <= SCORE_TOL
    assert (plain - want).abs().max().item() > SCORE_TOL  # the resize matters


def test_resize_short_side_is_torchvisions():
    import torchvision.transforms.functional as TF

    for h, w in ((120, 90), (90, 121), (384, 500), (33, 33)):
        x = torch.rand(2, 3, h, w)
        want = TF.resize(x, 384, antialias=True)
        got = resize_short_side(x, 384)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-6)


def test_gradient_contract_against_float64(nr_nets, nr_states, layout):
    """Input gradients of the fused float32 path against the same network in float64,
    itself checked against pyiqa in float64 where installed."""
    net = nr_nets[layout]
    net64 = copy.deepcopy(net).double()
    net64.semantic_model.set_fused(False)
    errors = []
    for i, shape in enumerate(SHAPES[:3]):
        x = distort(smooth_images(shape[0], shape[2], shape[3], seed=100 + i), 110 + i)
        _, g = _score_grad(lambda t: topiq_nr(t, net=net), x)
        s64, g64 = _score_grad(net64, x.double())
        errors.append(rel_error(g, g64))
    assert geomean(errors) <= GEOMEAN_MAX, errors
    assert max(errors) <= CASE_MAX, errors
    ref = build_reference_nr(layout == "aesthetics")
    if ref is not None:
        ref.load_state_dict(nr_states[layout])
        ref64 = ref.double().eval()
        s_p, g_p = _score_grad(ref64, x.double())
        assert (s_p - s64).abs().max().item() <= 1e-9
        assert rel_error(g64, g_p) <= 1e-6


def test_loss_is_zero_at_best_and_maps_the_score_range(nr_nets):
    x = distort(smooth_images(2, 48, 40, seed=120), 121)
    for layout, (worst, best) in (("quality", (0.0, 1.0)), ("aesthetics", (1.0, 10.0))):
        loss_fn = TOPIQNRLoss(net=nr_nets[layout], reduction="none")
        assert loss_fn.score_range == (worst, best)
        with torch.no_grad():
            s = loss_fn.score(x)
            assert torch.allclose(loss_fn(x), (best - s) / (best - worst), atol=1e-6)
            fn = topiq_nr_loss(x, net=nr_nets[layout], score_range=(worst, best), loss_weight=2.0)
            assert torch.allclose(fn, 2.0 * ((best - s) / (best - worst)).mean(), atol=1e-6)


def test_loss_trains_an_image_and_is_frozen(nr_nets):
    loss_fn = TOPIQNRLoss(net=nr_nets["quality"])
    assert list(loss_fn.parameters()) == [] and loss_fn.state_dict() == {}
    x = distort(smooth_images(1, 40, 40, seed=130), 131).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1e-2)
    first = None
    for _ in range(4):
        loss = loss_fn(x)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_fn(x).item() < first
    assert not loss_fn.training and not loss_fn.net.training


def test_weights_by_path_read_the_layout(nr_files, nr_nets):
    x = distort(smooth_images(1, 48, 48, seed=140), 141)
    for layout, path in nr_files.items():
        loss_fn = TOPIQNRLoss(weights=str(path), progress=False)
        assert loss_fn.net.num_class == (10 if layout == "aesthetics" else 1)
        assert loss_fn.resize is None
        with torch.no_grad():
            assert torch.allclose(loss_fn.score(x), nr_nets[layout](x), atol=1e-5)


def test_fr_and_nr_files_are_refused_by_the_other_loss_with_a_sentence(nr_files, weights_file):
    with pytest.raises(WeightsError, match="is a CFANet-FR .* checkpoint, not a CFANet-NR"):
        TOPIQNRLoss(weights=str(weights_file))
    with pytest.raises(WeightsError, match="is a CFANet-NR quality .* checkpoint, not a CFANet-FR"):
        TOPIQLoss(weights=str(nr_files["quality"]))


def test_registry_entries_know_their_network_resize_and_range():
    assert sorted(NR_WEIGHTS) == ["ava", "ava_swin", "face", "face_swin", "face_v1", "flive", "koniq", "spaq"]
    assert NR_WEIGHTS["koniq"].filename == "cfanet_nr_koniq_res50-9a73138b.pth"
    assert NR_WEIGHTS["flive"].resize == 384 and NR_WEIGHTS["koniq"].resize is None
    assert NR_WEIGHTS["ava"].score_range == (1.0, 10.0)
    assert NR_WEIGHTS["ava"].build().num_class == 10
    assert isinstance(NR_WEIGHTS["spaq"].build(), CFANetNR)
    assert not isinstance(NR_WEIGHTS["spaq"].build(), CFANetFR)


def test_random_weights_warn_and_bad_arguments_are_named():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        loss_fn = TOPIQNRLoss(weights=None)
    with pytest.raises(ValueError, match="`weights` must be one of \\['ava', 'ava_swin', 'face', 'face_swin', 'face_v1', 'flive', 'koniq', 'spaq'\\]"):
        TOPIQNRLoss(weights="kadid")
    with pytest.raises(ValueError, match="`resize` must be None or an int >= 32"):
        topiq_nr(torch.rand(1, 3, 40, 40), net=loss_fn.net, resize=16)
    with pytest.raises(ValueError, match="`img` must have shape"):
        loss_fn(torch.rand(3, 40, 40))
    with pytest.raises(ValueError, match="`score_range` must be"):
        TOPIQNRLoss(net=loss_fn.net, score_range=(1.0, 1.0))


def test_quality_maps_of_a_single_image(nr_nets):
    from topiq_loss import render_maps

    loss_fn = TOPIQNRLoss(net=nr_nets["quality"])
    x = distort(smooth_images(2, 64, 48, seed=150), 151)
    maps = loss_fn.quality_maps(x)
    assert len(maps.gates) == 5 and len(maps.cross_attention) == 4
    for m in maps.gates + maps.cross_attention:
        assert m.shape == (2, 1, 64, 48) and not m.requires_grad
        assert (m >= 0).all() and (m <= 1).all()
    assert torch.allclose(maps.score, loss_fn.score(x).detach(), atol=1e-6)
    assert render_maps(x, None, maps, panel=64).size[0] > 0


# ------------------------------------------------------------------ adapters and CLI
def test_sr_and_generator_losses_add_the_nr_term(nr_nets, loss_fn):
    from topiq_loss import GeneratorLoss, SRLoss

    nr = TOPIQNRLoss(net=nr_nets["aesthetics"], reduction="none")
    hr = smooth_images(2, 48, 48, seed=160)
    sr = distort(hr, 161)
    sr_loss = SRLoss(scale=2, topiq=loss_fn, nr_weight=0.5, nr=nr, reduction="none")
    with torch.no_grad():
        terms = sr_loss.terms(sr, hr)
        # anchored (the default, a target exists): as natural as hr, on the entry's 1..10 range
        want_nr = anchored_penalty((nr.score(hr) - nr.score(sr)) / 9.0)
        assert torch.allclose(terms["nr"], want_nr, atol=1e-6)
        assert torch.allclose(terms["total"], terms["pixel"] + terms["topiq"] + 0.5 * want_nr, atol=1e-6)
        alone = TOPIQNRLoss(net=nr_nets["aesthetics"], reduction="none", objective="score")
        terms = SRLoss(scale=2, topiq=loss_fn, nr_weight=0.5, nr=alone, reduction="none").terms(sr, hr)
        assert torch.allclose(terms["nr"], (10.0 - nr.score(sr)) / 9.0, atol=1e-6)
    assert SRLoss(scale=2, topiq=loss_fn).nr is None  # off by default, nothing built
    g_loss = GeneratorLoss("nsgan", topiq=loss_fn, nr_weight=0.1, nr=nr)
    total, logs = g_loss(sr, hr, torch.zeros(2, 1))
    assert set(logs) == {"pixel", "topiq", "nr", "adversarial", "total"}
    with torch.no_grad():
        want = 1e-2 * logs["pixel"] + logs["topiq"] + 0.1 * logs["nr"] + 5e-3 * logs["adversarial"]
    assert torch.allclose(total.detach(), want, atol=1e-6)
    with pytest.raises(TypeError, match="`nr` must be a TOPIQNRLoss"):
        SRLoss(scale=2, topiq=loss_fn, nr=3)


def test_nr_alone_in_an_sr_loss_needs_no_reference_network(nr_nets):
    from topiq_loss import SRLoss

    nr = TOPIQNRLoss(net=nr_nets["quality"], reduction="none")
    with pytest.warns(UserWarning, match="RANDOM"):
        loss = SRLoss(scale=2, topiq_weight=0.0, nr_weight=1.0, nr=nr, weights=None)
    hr = smooth_images(1, 40, 40, seed=170)
    assert set(loss.terms(distort(hr, 171), hr)) == {"pixel", "nr", "total"}


def test_cli_scores_and_maps_one_image_without_reference(tmp_path, nr_files, nr_nets, weights_file, capsys):
    from topiq_loss.cli.app import main, read_image, to_pil

    img = distort(smooth_images(1, 40, 56, seed=180), 181)
    to_pil(img).save(tmp_path / "x.png")
    assert main(["score", str(tmp_path / "x.png"), "--weights", str(nr_files["aesthetics"]), "--format", "plain"]) == 0
    printed = float(capsys.readouterr().out.strip())
    with torch.no_grad():
        want = nr_nets["aesthetics"](read_image(tmp_path / "x.png")).item()
    assert printed == pytest.approx(want, abs=1e-5)
    out = tmp_path / "map.png"
    assert main(["map", str(tmp_path / "x.png"), "-o", str(out), "--weights", str(nr_files["quality"])]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    # An FR checkpoint for a single image is refused with the sentence, exit code 2.
    assert main(["score", str(tmp_path / "x.png"), "--weights", str(weights_file)]) == 2
    assert "is a CFANet-FR" in capsys.readouterr().err


def test_no_reference_example_smoke(tmp_path, nr_files, capsys):
    pytest.importorskip("skimage", reason="the examples need scikit-image (the [examples] extra)")
    pytest.importorskip("matplotlib", reason="the examples need matplotlib (the [examples] extra)")
    import importlib.util
    import math

    from PIL import Image

    path = Path(__file__).parents[1] / "examples" / "enhance_no_reference.py"
    spec = importlib.util.spec_from_file_location("example_enhance_no_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--steps", "2", "--batch", "2", "--patch", "24", "--test-size", "64", "--threads", str(torch.get_num_threads())]
    results = mod.main([*args, "--weights", str(nr_files["quality"]), "--out", str(tmp_path)])
    assert list(results) == ["bicubic", "consistency", "consistency + NR", "HR ground truth"]
    assert all(math.isfinite(r["nr"]) for r in results.values())
    assert all(math.isfinite(r["psnr"]) for n, r in results.items() if n != "HR ground truth")
    for name in ("nr_loss_curves.png", "nr_before_after.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and min(im.size) >= 100
    assert "TOPIQ-NR weights: seeded_untrained_quality.pth" in capsys.readouterr().out
    # Its `--help` as a script runs with the other examples' (test_examples.py, one interpreter).
