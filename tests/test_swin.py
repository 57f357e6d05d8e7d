"""The Swin-B CFANet (TOPIQ's ``cfanet_iaa_ava_swin`` and ``topiq_nr_gfiqa_swin``) and the
ResNet50 face layout: key layout, parity with pyiqa, the float64 gradient contract.

Swin-B at 384 px costs about a second per image on a CPU core, so the networks are
built once per module and the cases are few: every image is resized to 384x384 by the
network, whatever its size, so small odd inputs cost as much as large ones.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from accuracy_cases import CASE_MAX, GEOMEAN_MAX, geomean, rel_error
from conftest import distort, official_keys, smooth_images

from topiq_loss.models.cfanet_nr import CFANetNR
from topiq_loss.models.swin import SWIN_CHANNELS, SwinFeatures, relative_position_index, shift_mask

# The Swin-B networks are the module's cost: under pytest-xdist its tests stay on one
# worker, so they are built once.
pytestmark = pytest.mark.xdist_group("swin")

def _perturb_layer_norms(net: nn.Module, seed: int) -> None:
    """LayerNorm affines away from (1, 0), so that parity proves they are applied."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.LayerNorm) and m.weight is not None:
                m.weight.add_(0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.add_(0.1 * torch.randn(m.bias.shape, generator=gen))


@pytest.fixture(scope="module")
def swin_pair():
    """(pyiqa's CFANet-Swin AVA layout, ours with its weights loaded strictly)."""
    oracle = pytest.importorskip("pyiqa_oracle")
    pytest.importorskip("timm", reason="pyiqa's topiq_swin.py imports timm")
    with torch.random.fork_rng():
        torch.manual_seed(38)
        ref = oracle.build_reference_swin_nr(aesthetics=True)
    if ref is None:
        pytest.skip("pyiqa (its topiq_arch.py / topiq_swin.py) or timm is not installed")
    _perturb_layer_norms(ref, seed=1)
    ours = CFANetNR.swin_aesthetics().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # also proves the key layout
    return ref, ours


@pytest.mark.parametrize(
    ("build", "keys"),
    [
        (CFANetNR.swin_aesthetics, "cfanet_iaa_ava_swin_state_dict_keys.txt"),
        (CFANetNR.swin, "topiq_nr_gfiqa_swin_state_dict_keys.txt"),
    ],
    ids=["ava_swin", "face_swin"],
)
def test_state_dict_is_the_official_layout(build, keys):
    want = official_keys(keys)
    state = build().state_dict()
    assert sorted(state) == sorted(want)
    for key, (shape, dtype) in want.items():
        assert tuple(state[key].shape) == shape, key
        assert str(state[key].dtype).removeprefix("torch.") == dtype, key


def test_buffers_are_the_original_swin_ones():
    """The relative position index and shift masks, checked on small cases by hand."""
    idx = relative_position_index(2)
    # Window 2: offsets (dy, dx) in {-1, 0, 1}^2 -> (dy + 1) * 3 + (dx + 1).
    assert idx.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    assert idx.dtype == torch.int64
    mask = shift_mask(grid=4, window=2, shift=1)
    assert mask.shape == (4, 4, 4)
    assert (mask[0] == 0).all()  # an interior window never straddles the roll
    assert mask[3].tolist() == [[0.0, -100.0, -100.0, -100.0], [-100.0, 0.0, -100.0, -100.0],
                                [-100.0, -100.0, 0.0, -100.0], [-100.0, -100.0, -100.0, 0.0]]
    feats = SwinFeatures()
    assert feats.channels == SWIN_CHANNELS
    blocks = [b for stage in feats.layers for b in stage.blocks]
    # Shifted: every second block where the map (96, 48, 24) is wider than the window;
    # none in the last stage (12 x 12 = one window), as the original Swin does.
    assert [b.attn_mask is not None for b in blocks] == [False, True] * 11 + [False, False]


def test_scores_match_pyiqa(swin_pair):
    """Batch of 2 at an odd, non-square size (the network resizes to 384 itself): the
    fused (SDPA) path and torchvision's reference path within 1e-4 of pyiqa (1..10)."""
    ref, ours = swin_pair
    x = smooth_images(2, 101, 135, seed=5)
    with torch.no_grad():
        want = ref(x).reshape(-1)
        got = ours(x)
        ours.semantic_model.set_fused(False)
        try:
            got_ref_path = ours(x[1:])  # one image: each costs about a second
        finally:
            ours.semantic_model.set_fused(True)
    assert got.shape == (2,)
    assert 1.0 < float(want.min()) and float(want.max()) < 10.0
    assert (got - want).abs().max().item() <= 1e-4
    assert (got_ref_path - want[1:]).abs().max().item() <= 1e-4


def test_features_match_pyiqa_levels(swin_pair):
    """The four levels (256, 512, 1024, 1024 channels on 48, 24, 12, 12 grids)."""
    ref, ours = swin_pair
    x = smooth_images(1, 384, 384, seed=6)
    with torch.no_grad():
        want = ref.get_swin_feature(ref.semantic_model, ref.preprocess(x))
        got = ours.backbone_features(x)
    assert [tuple(f.shape[1:]) for f in got] == [(256, 48, 48), (512, 24, 24), (1024, 12, 12), (1024, 12, 12)]
    for g, w in zip(got, want, strict=True):
        assert ((g - w).norm() / w.norm()).item() <= 1e-5


def test_input_gradients_meet_the_float64_contract(tiny):
    """Input gradients of the score (the default SDPA path in float32) against the same
    network on torchvision's path in float64, with the contract's measures, over odd,
    non-square, batched and photographic inputs (every one resized to 384x384 inside).
    On the small Swin: Swin-B in float64 costs about 10 s an image on a CPU core, so its
    ten cases are in ``python benchmarks/accuracy_report.py --swin`` (docs/accuracy.md)."""
    net64 = copy.deepcopy(tiny).double()
    net64.semantic_model.set_fused(False)
    cases = [smooth_images(1, 97, 61, seed=7), smooth_images(2, 33, 47, seed=8), smooth_images(1, 385, 200, seed=9)]
    cases.append(distort(smooth_images(1, 129, 183, seed=10), seed=11, level=0.05))
    errors = []
    for x in cases:
        _, g32 = _score_and_grad(tiny, x)
        _, g64 = _score_and_grad(net64, x.double())
        errors += [rel_error(g32[i], g64[i]) for i in range(x.shape[0])]
    assert geomean(errors) <= GEOMEAN_MAX, errors
    assert max(errors) <= CASE_MAX, errors


def test_face_res50_layout_at_512_matches_pyiqa_and_trains():
    """The ResNet50 face layout at pyiqa's test_img_size=512 (short side, antialiased),
    batch of 3: scores match, and the loss trains (finite, nonzero input gradients)."""
    oracle = pytest.importorskip("pyiqa_oracle")
    from topiq_loss import TOPIQNRLoss
    from topiq_loss.weights.registry import REGISTRY

    entry = REGISTRY["face"]
    assert entry.resize == 512
    with torch.random.fork_rng():
        torch.manual_seed(512)
        ref = oracle.build_reference_nr(test_img_size=512)
    if ref is None:
        pytest.skip("pyiqa or timm is not installed")
    net = entry.build()
    assert isinstance(net, CFANetNR)
    net.load_state_dict(ref.state_dict(), strict=True)
    loss = TOPIQNRLoss(net=net, resize=entry.resize, score_range=entry.score_range)
    x = smooth_images(3, 64, 75, seed=9)
    with torch.no_grad():
        # Samples are scored independently (BatchNorm in eval): pyiqa's score of the last
        # image of the batch is the yardstick (each 512 px pass costs a second or more).
        want = ref(x[2:]).reshape(-1)
    pred = x.clone().requires_grad_(True)
    values = loss.loss_values(pred)  # (1 - score) on the (0, 1) range, one per image
    assert (values.detach()[2:] - (1.0 - want)).abs().max().item() <= 1e-4
    (g,) = torch.autograd.grad(values.sum(), pred)
    assert torch.isfinite(g).all()
    assert all(g[i].abs().sum() > 0 for i in range(3))


# ------------------------------------------------------------- training-grade (item 4)
def _tiny_swin_nr() -> CFANetNR:
    """A CFANet-NR on a small Swin (same module tree and window 12 at 384 px, narrow and
    shallow): the mechanisms below do not depend on Swin-B's width, and it runs in
    tens of milliseconds instead of a second per image."""
    with torch.random.fork_rng():
        torch.manual_seed(11)
        backbone = SwinFeatures(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
        net = CFANetNR(dim=32, num_heads=2, backbone=backbone).eval()
    _perturb_layer_norms(net, seed=2)
    return net


@pytest.fixture(scope="module")
def tiny():
    return _tiny_swin_nr()


def _score_and_grad(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    s = net(x)
    (g,) = torch.autograd.grad(s.sum(), x)
    return s.detach(), g


def test_tiny_swin_levels_follow_its_channels(tiny):
    feats = tiny.backbone_features(smooth_images(1, 50, 70, seed=1))
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 48, 48), (64, 24, 24), (128, 12, 12), (128, 12, 12)]
    assert len(tiny.weight_pool) == len(tiny.sa_attn_blks) == 4 and len(tiny.attn_blks) == 3


def test_grad_checkpointing_per_stage_gives_the_same_values_and_gradients(tiny):
    x = smooth_images(2, 45, 60, seed=3)
    s0, g0 = _score_and_grad(tiny, x)
    stages = []
    hooks = [stage.register_forward_pre_hook(lambda *a: stages.append(1)) for stage in tiny.semantic_model.layers]
    try:
        tiny.set_grad_checkpointing(True)
        assert tiny.grad_checkpointing and tiny.semantic_model.grad_checkpointing
        s1, g1 = _score_and_grad(tiny, x)
    finally:
        tiny.set_grad_checkpointing(False)
        for h in hooks:
            h.remove()
    assert len(stages) == 8  # each stage ran again in backward
    assert torch.equal(s0, s1)
    assert torch.allclose(g0, g1, rtol=0, atol=1e-6 * float(g0.abs().max()))


def test_fused_attention_equals_torchvisions_in_float64(tiny):
    """The SDPA windows (bias broadcast per group of shifted windows) and torchvision's
    ``shifted_window_attention``: the same maths, to float64 rounding."""
    net = copy.deepcopy(tiny).double()
    x = smooth_images(2, 40, 64, seed=4).double()
    s0, g0 = _score_and_grad(net, x)
    net.semantic_model.set_fused(False)
    s1, g1 = _score_and_grad(net, x)
    assert (s0 - s1).abs().max().item() <= 1e-12
    assert ((g0 - g1).norm() / g1.norm()).item() <= 1e-10


def test_backbone_stays_float32_under_autocast_unless_asked(tiny):
    seen: list[torch.dtype] = []
    fc1 = tiny.semantic_model.layers[0].blocks[0].mlp.fc1
    hook = fc1.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    x = smooth_images(1, 40, 40, seed=5)
    try:
        with torch.no_grad():
            want = tiny(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                default = tiny(x)
                tiny.set_backbone_autocast(True)
                half = tiny(x)
    finally:
        tiny.set_backbone_autocast(False)
        hook.remove()
    assert seen == [torch.float32, torch.float32, torch.bfloat16]
    assert torch.isfinite(half).all()
    assert (default.float() - want).abs().max().item() <= 5e-2  # the head runs in bf16
    # LayerNorm of half-precision input is computed in float32 (then rounded once).
    ln = tiny.semantic_model.layers[0].blocks[0].norm1
    y = torch.randn(4, 16).mul(30).add(100).bfloat16()
    with torch.no_grad():
        want_ln = nn.functional.layer_norm(y.float(), (16,), ln.weight, ln.bias, ln.eps).bfloat16()
        assert torch.equal(ln(y), want_ln)


@pytest.fixture(scope="module")
def tiny_loss(tiny):
    from topiq_loss import TOPIQNRLoss

    return TOPIQNRLoss(net=copy.deepcopy(tiny), resize=None)


@pytest.mark.parametrize(("n", "h", "w"), [(1, 32, 32), (2, 37, 53), (3, 33, 47), (4, 48, 33), (6, 96, 64), (5, 64, 96)])
def test_anchored_loss_is_exactly_zero_at_the_target_with_zero_gradient(tiny_loss, n, h, w):
    """32-96 px (the losses take H, W >= 32), batches 1-6; every image is resized to
    384x384 inside the network."""
    x = smooth_images(n, h, w, seed=6 + n)
    pred = x.clone().requires_grad_(True)
    value = tiny_loss(pred, x.clone())
    (g,) = torch.autograd.grad(value, pred)
    assert value.item() == 0.0 and torch.count_nonzero(g) == 0
    assert tiny_loss(x).item() != 0.0  # without a target: a score, not 0


def test_frozen_pickled_and_moved_networks_keep_their_buffers(tiny):
    import pickle

    from topiq_loss import TOPIQNRLoss

    loss = TOPIQNRLoss(net=copy.deepcopy(tiny), resize=None, score_range=(0.0, 1.0))
    net = loss.net
    assert not list(net.parameters())  # frozen as every network: all tensors are buffers
    assert set(net.state_dict()) == set(tiny.state_dict())
    idx = net.semantic_model.layers[1].blocks[1].attn.relative_position_index
    assert idx.dtype == torch.int64 and not idx.requires_grad
    x = smooth_images(1, 40, 40, seed=7)
    with torch.no_grad():
        want = loss.score(x)
        again = pickle.loads(pickle.dumps(loss))
        assert torch.equal(again.score(x), want)
        wide = copy.deepcopy(loss).to(torch.float64)
        wide_idx = wide.net.semantic_model.layers[1].blocks[1].attn.relative_position_index
        assert wide_idx.dtype == torch.int64 and torch.equal(wide_idx, idx)
        assert abs(wide.score(x.double()).item() - want.item()) <= 1e-4


def test_a_changed_fixed_buffer_is_refused_at_load_naming_the_key(tiny):
    from topiq_loss import WeightsError
    from topiq_loss.weights.checkpoint import load_state_dict_checked

    net = copy.deepcopy(tiny)
    state = net.state_dict()
    for key, bad in (
        ("semantic_model.layers.0.blocks.0.attn.relative_position_index", lambda t: t.flip(1)),
        ("semantic_model.layers.1.blocks.1.attn_mask", torch.zeros_like),
    ):
        broken = dict(state, **{key: bad(state[key])})
        with pytest.raises(WeightsError, match=rf"my\.pth: tensor '{key}' .* is not the"):
            load_state_dict_checked(net, broken, "my.pth")
        with pytest.raises(WeightsError, match=rf"tensor '{key}'"):
            net.load_state_dict(broken)
    load_state_dict_checked(net, state, "my.pth")  # the right ones load


def test_the_reader_takes_swin_buffers_and_no_other_integers(tmp_path, tiny):
    from topiq_loss import WeightsError
    from topiq_loss.weights.checkpoint import checkpoint_layout, read_state_dict

    state = tiny.state_dict()
    path = tmp_path / "swin.pth"
    torch.save({"params": state}, path)
    read = read_state_dict(path)
    assert read.keys() == state.keys() and checkpoint_layout(read) == "nr_swin"
    emb = {"h_emb": torch.zeros(1, 256, 32, 1)}
    assert checkpoint_layout({**read, **emb}) == "iaa_swin"
    index_key = "semantic_model.layers.0.blocks.0.attn.relative_position_index"
    cases = {
        "ints elsewhere": ({"semantic_model.norm.weight": torch.ones(128, dtype=torch.int64)}, "has dtype torch.int64"),
        "float index": ({index_key: state[index_key].float()}, "a relative position index is int64"),
        "odd index": ({index_key: state[index_key][:, :10]}, "is square"),
        "negative index": ({index_key: -state[index_key]}, "outside"),
        "mask values": (
            {"semantic_model.layers.0.blocks.1.attn_mask": torch.full((64, 144, 144), 3.0)}, "other than 0 and -100"
        ),
        "int mask": (
            {"semantic_model.layers.0.blocks.1.attn_mask": torch.zeros((64, 144, 144), dtype=torch.int64)},
            "has dtype torch.int64",
        ),
    }
    for name, (change, message) in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.pth"
        torch.save({**state, **change}, bad)
        with pytest.raises(WeightsError, match=message):
            read_state_dict(bad)


def test_random_swin_networks_of_the_entries_are_seeded():
    """``entry.build()`` under the package's seeded init: the same random Swin-B
    weights each time, torch's stream untouched (what weights="random"-style tests use
    for the Swin entries, since "random" alone builds the kind's ResNet50 layout)."""
    from topiq_loss.models.seeded_init import seeded_init
    from topiq_loss.weights.registry import REGISTRY

    before = torch.random.get_rng_state()
    with seeded_init("topiq-nr_swin:random"):
        a = REGISTRY["face_swin"].build()
    with seeded_init("topiq-nr_swin:random"):
        b = REGISTRY["face_swin"].build()
    assert torch.equal(torch.random.get_rng_state(), before)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert isinstance(a, CFANetNR) and isinstance(a.semantic_model, SwinFeatures) and a.num_class == 1


def test_the_nr_metric_scores_with_a_swin_network(tiny):
    pytest.importorskip("torchmetrics")
    from topiq_loss.metrics.topiq import TOPIQNRMetric

    metric = TOPIQNRMetric(net=copy.deepcopy(tiny), resize=None)
    x = smooth_images(2, 41, 57, seed=8)
    metric.update(x)
    with torch.no_grad():
        want = tiny(x).mean()
    assert abs(float(metric.compute()) - float(want)) <= 1e-5
