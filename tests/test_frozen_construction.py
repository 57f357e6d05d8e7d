"""Frozen by construction (issue 27): every copy, save, load and move of a loss or metric
keeps its network frozen; exactness at the target does not depend on memory format;
settings are checked when built; metrics share one network per weights and device."""

from __future__ import annotations

import copy
import io
import itertools
import pickle
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn as nn
from conftest import distort, smooth_images

from topiq_loss import CFANetFR, CFANetNR, LPIPSLoss, LPIPSPlusLoss, TOPIQLoss, TOPIQNRLoss
from topiq_loss.models.lpips import LPIPSNetwork

metrics = pytest.importorskip("torchmetrics") and pytest.importorskip("topiq_loss.metrics.topiq")
TOPIQMetric, TOPIQNRMetric = metrics.TOPIQMetric, metrics.TOPIQNRMetric


@pytest.fixture(scope="module")
def nr_net() -> CFANetNR:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TOPIQNRLoss(weights=None, resize=None).net


@pytest.fixture(scope="module")
def lpips_net() -> LPIPSNetwork:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LPIPSLoss(weights=None).net


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    ref = smooth_images(1, 32, 40, seed=27)
    return distort(ref, 7), ref


# name -> (build(keep), call(loss, pred, target))
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "topiq": lambda nets, keep: TOPIQLoss(net=copy.deepcopy(nets["fr"]), keep_in_state_dict=keep),
    "topiq_nr": lambda nets, keep: TOPIQNRLoss(net=copy.deepcopy(nets["nr"]), keep_in_state_dict=keep),
    "lpips": lambda nets, keep: LPIPSLoss(network=copy.deepcopy(nets["lpips"]), keep_in_state_dict=keep),
    "lpips_plus": lambda nets, keep: LPIPSPlusLoss(network=copy.deepcopy(nets["lpips"]), keep_in_state_dict=keep),
}


def _pickle(m: nn.Module) -> nn.Module:
    return pickle.loads(pickle.dumps(m))


def _torch_save(m: nn.Module) -> nn.Module:
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _assign(m: nn.Module) -> nn.Module:
    m.load_state_dict(copy.deepcopy(m).state_dict(), assign=True)
    return m


def _assign_parameters(m: nn.Module) -> nn.Module:
    # A state dict whose values are trainable Parameters (keep_vars from a trainable copy).
    state = {
        k: nn.Parameter(v.detach().clone(), requires_grad=True) if v.is_floating_point() else v
        for k, v in m.state_dict().items()
    }
    m.load_state_dict(state, assign=True)
    return m


COPIES: dict[str, Callable[[nn.Module], nn.Module]] = {
    "pickle": _pickle,
    "deepcopy": copy.deepcopy,
    "torch_save": _torch_save,
    "assign": _assign,
    "assign_parameters": _assign_parameters,
    "float64": lambda m: m.to(torch.float64),
}


def _net_tensors(net: nn.Module) -> dict[str, torch.Tensor]:
    return dict(itertools.chain(net.named_parameters(), net.named_buffers()))


@pytest.fixture(scope="module")
def nets(net, nr_net, lpips_net):
    return {"fr": net, "nr": nr_net, "lpips": lpips_net}


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_a_copied_saved_loaded_or_moved_loss_stays_frozen(nets, images, kind, how, keep):
    parent = nn.Module()
    parent.body = nn.Conv2d(3, 3, 1)
    parent.loss = LOSSES[kind](nets, keep)
    parent = COPIES[how](parent)
    parent.requires_grad_(True)  # what GAN loops do to toggle a generator
    net = parent.loss.net
    tensors = _net_tensors(net)
    assert tensors and not any(t.requires_grad for t in tensors.values())
    before = {k: v.detach().clone() for k, v in tensors.items()}
    opt = torch.optim.SGD(parent.parameters(), lr=10.0, weight_decay=0.5)
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(parent.body.weight), id(parent.body.bias)}
    pred, target = (x.to(parent.body.weight.dtype) for x in images)
    out = parent.body(pred)
    loss = parent.loss(out) if kind == "topiq_nr" else parent.loss(out, target)
    loss.backward()
    opt.step()
    after = _net_tensors(parent.loss.net)
    assert sorted(after) == sorted(before)
    assert all(torch.equal(after[k], before[k]) for k in before), f"{kind} changed after {how}"
    assert not any(t.requires_grad or t.grad is not None for t in after.values())
    assert parent.body.weight.grad is not None
    if keep:  # official checkpoints still load strict: the keys are the network's own
        assert sorted(k.removeprefix("loss._net.") for k in parent.state_dict() if k.startswith("loss.")) == sorted(
            net.state_dict()
        )


@pytest.mark.parametrize("how", sorted(set(COPIES) - {"assign", "assign_parameters"}))
@pytest.mark.parametrize("kind", ["fr", "nr"])
def test_a_copied_metric_stays_frozen(nets, kind, how):
    metric = TOPIQMetric(net=copy.deepcopy(nets["fr"])) if kind == "fr" else TOPIQNRMetric(net=copy.deepcopy(nets["nr"]))
    parent = nn.Module()
    parent.metric = metric
    parent = COPIES[how](parent)
    parent.requires_grad_(True)
    assert list(parent.parameters()) == []
    tensors = _net_tensors(parent.metric.loss.net)
    assert tensors and not any(t.requires_grad for t in tensors.values())


def test_a_given_network_is_frozen_in_place_and_keeps_working(net, images):
    own = copy.deepcopy(net)
    want = TOPIQLoss(net=copy.deepcopy(net)).score(*images)
    loss_fn = TOPIQLoss(net=own, keep_in_state_dict=True)
    assert loss_fn.net is own and list(own.parameters()) == []
    assert torch.equal(loss_fn.score(*images), want)
    # A checkpoint of the network, as saved from the official one, loads strict.
    loss_fn.net.load_state_dict(net.state_dict(), strict=True)
    assert torch.equal(loss_fn.score(*images), want)


# --- 8: per_image is (N,) for every N ---------------------------------------------------


@pytest.mark.parametrize("batches", [(1,), (1, 1), (2, 1), (3,)])
def test_per_image_is_one_dimensional(net, nr_net, batches):
    fr = TOPIQMetric(net=net, return_per_image=True)
    nr = TOPIQNRMetric(net=nr_net, return_per_image=True, resize=None)
    for i, n in enumerate(batches):
        ref = smooth_images(n, 32, 32, seed=40 + i)
        fr.update(distort(ref, i), ref)
        nr.update(ref)
    for m in (fr, nr):
        out = m.compute()
        assert out["per_image"].shape == (sum(batches),)
        assert out["mean"].shape == ()


# --- 9: exact zero whatever the memory format ------------------------------------------


@pytest.fixture(scope="module")
def formatted_nets(net):
    out = {}
    for fuse, channels_last in [(False, None), (True, None), (True, True), (True, False)]:
        model = copy.deepcopy(net)
        model.semantic_model.set_fused(fuse, channels_last=channels_last)
        out[(fuse, channels_last)] = model
    return out


@pytest.mark.parametrize("cl_side", ["pred", "target"])
@pytest.mark.parametrize("setting", [(False, None), (True, None), (True, True), (True, False)])
def test_loss_at_the_target_is_exactly_zero_in_any_memory_format(formatted_nets, setting, cl_side):
    loss_fn = TOPIQLoss(net=formatted_nets[setting])
    x = smooth_images(2, 40, 36, seed=9)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    pred, target = (channels_last.clone(), x.clone()) if cl_side == "pred" else (x.clone(), channels_last.clone())
    pred.requires_grad_(True)
    loss = loss_fn(pred, target)
    loss.backward()
    assert loss.item() == 0.0
    assert pred.grad is not None and torch.count_nonzero(pred.grad) == 0
    fixed = loss_fn.with_target(target)
    p = pred.detach().clone().requires_grad_(True)
    fixed(p).backward()
    assert p.grad is not None and torch.count_nonzero(p.grad) == 0


@pytest.mark.parametrize("cl_side", ["img", "target"])
def test_nr_and_lpips_at_the_target_are_exactly_zero_in_any_memory_format(nr_net, lpips_net, cl_side):
    x = smooth_images(2, 40, 36, seed=10)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    for loss_fn in (TOPIQNRLoss(net=nr_net, resize=None), LPIPSPlusLoss(network=lpips_net)):
        pred, target = (channels_last.clone(), x.clone()) if cl_side == "img" else (x.clone(), channels_last.clone())
        pred.requires_grad_(True)
        loss = loss_fn(pred, target)
        loss.backward()
        assert loss.item() == 0.0, type(loss_fn).__name__
        assert pred.grad is not None and torch.count_nonzero(pred.grad) == 0, type(loss_fn).__name__


# --- 11 (NR): resize is checked when the loss is built -----------------------------------


@pytest.mark.parametrize("resize", [5, 31, 0, -384, 32.0, True, "big", "384"])
def test_nr_resize_is_checked_at_construction(nr_net, resize):
    with pytest.raises((ValueError, TypeError), match=r"`resize` must be None, 'auto' or an int >= 32.*got"):
        TOPIQNRLoss(net=nr_net, resize=resize)
    with pytest.raises((ValueError, TypeError), match=r"`resize` must be None, 'auto' or an int >= 32.*got"):
        TOPIQNRMetric(net=nr_net, resize=resize)


@pytest.mark.parametrize("resize", [None, "auto", 32, 384])
def test_nr_valid_resize_builds(nr_net, resize):
    assert TOPIQNRLoss(net=nr_net, resize=resize).resize == (None if resize == "auto" else resize)


# --- 13: one network per weights and device ---------------------------------------------


@pytest.fixture()
def other_weights_file(tmp_path, seeded_state) -> str:
    state = {k: v.clone() for k, v in seeded_state.items()}
    state["h_emb"] += 0.01
    path = tmp_path / "other.pth"
    torch.save({"params": state}, path)
    return str(path)


def test_metrics_with_the_same_weights_share_one_network(weights_file, other_weights_file, images):
    a = TOPIQMetric(weights=str(weights_file))
    b = TOPIQMetric(weights=weights_file, return_std=True)
    assert a.loss.net is b.loss.net
    c = TOPIQMetric(weights=other_weights_file)
    assert c.loss.net is not a.loss.net
    a.update(*images)
    c.update(*images)
    assert not torch.equal(a.compute(), c.compute())  # truly other weights
    # Moving a metric (to its own device again) keeps the sharing and the other's network.
    a.to("cpu")
    assert a.loss.net is b.loss.net
    from topiq_loss.integrations._common import cached_fr

    assert cached_fr(str(weights_file), torch.device("cpu")).net is a.loss.net


def test_a_rewritten_weights_file_is_not_the_cached_network(tmp_path, seeded_state, images):
    path = tmp_path / "w.pth"
    torch.save({"params": seeded_state}, path)
    a = TOPIQMetric(weights=str(path))
    state = {k: v.clone() for k, v in seeded_state.items()}
    state["h_emb"] -= 0.02
    torch.save({"params": state}, path)
    b = TOPIQMetric(weights=str(path))
    assert b.loss.net is not a.loss.net


def test_random_metrics_do_not_share(nr_net):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = TOPIQNRMetric(weights=None, resize=None), TOPIQNRMetric(weights=None, resize=None)
    assert a.loss.net is not b.loss.net


# --- 14b: with_target after the loss changes precision -----------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_with_target_follows_the_loss_precision(net, images, dtype):
    pred, target = images
    loss_fn = TOPIQLoss(net=copy.deepcopy(net))
    fixed = loss_fn.with_target(target)
    loss_fn.to(dtype)
    got = fixed(pred.to(dtype))
    want = loss_fn(pred.to(dtype), target.to(dtype))
    assert got.dtype == want.dtype and torch.allclose(got, want, rtol=1e-3, atol=1e-6)
    assert fixed(target.to(dtype)).item() == 0.0


def test_stale_target_features_are_refused_with_the_dtypes(net, images):
    from topiq_loss import topiq_fr_target_features
    from topiq_loss.functional.fr import topiq_fr

    pred, target = images
    own = copy.deepcopy(net)
    feats = topiq_fr_target_features(target, net=own)
    own.half()
    with pytest.raises(ValueError, match=r"`target` features are torch.float32 on cpu.*network.*torch.float16"):
        topiq_fr(pred.half(), feats, net=own)


def test_nets_are_plain_cfanets(nets):
    assert isinstance(nets["fr"], CFANetFR) and isinstance(nets["nr"], CFANetNR)


def test_a_moved_metric_takes_its_own_copy_and_an_unpickled_one_joins(weights_file, images):
    from topiq_loss.losses.shared import network_on_device

    a, b = TOPIQMetric(weights=str(weights_file)), TOPIQMetric(weights=str(weights_file))
    shared = a.loss.net
    a.to("meta")  # another device: a takes that device's network, b's stays where it was
    assert a.loss.net is not shared and a.loss.net.h_emb.device.type == "meta"
    assert b.loss.net is shared and shared.h_emb.device.type == "cpu"
    assert network_on_device(b._network_key, shared, "meta") is a.loss.net
    copied = pickle.loads(pickle.dumps(b))  # a spawned worker's copy joins this process's network
    assert copied.loss.net is shared
    copied.update(*images)
    b.update(*images)
    assert torch.equal(copied.compute(), b.compute())
