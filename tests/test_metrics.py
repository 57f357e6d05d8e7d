"""topiq_loss.metrics.topiq: torchmetrics Metrics over TOPIQ-FR and TOPIQ-NR scores."""

from __future__ import annotations

import copy
import importlib
import re
import sys

import pytest
import torch
from conftest import distort, smooth_images

pytest.importorskip("torchmetrics", reason="`pip install topiq-loss[metrics]` to test the metrics")

from topiq_loss import CFANetNR, TOPIQNRLoss
from topiq_loss.metrics.topiq import TOPIQMetric, TOPIQNRMetric


@pytest.fixture(scope="module")
def pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three batches (sizes 2, 1, 3) of distorted/reference 32x40 images."""
    out = []
    for i, n in enumerate((2, 1, 3)):
        hr = smooth_images(n, 32, 40, seed=70 + i)
        out.append((distort(hr, 80 + i, level=0.05 * (i + 1)), hr))
    return out


@pytest.fixture(scope="module")
def nr_net() -> CFANetNR:
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return TOPIQNRLoss(weights="random", resize=None).net


def _all_scores(loss_fn, pairs) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([loss_fn.score(p, t) for p, t in pairs])


def test_mean_over_updates_equals_mean_score_and_resets(net, loss_fn, pairs):
    metric = TOPIQMetric(net=net, return_std=True, return_per_image=True)
    for p, t in pairs:
        metric.update(p, t)
    want = _all_scores(loss_fn, pairs)
    out = metric.compute()
    assert torch.allclose(out["mean"], want.mean(), atol=1e-5)
    assert torch.allclose(out["std"], want.std(), atol=1e-5)
    assert torch.allclose(out["per_image"], want, atol=1e-5)
    # A single update only sees its own batch: the accumulation above is real.
    metric.reset()
    metric.update(*pairs[2])
    assert torch.allclose(metric.compute()["mean"], want[3:].mean(), atol=1e-5)
    metric.reset()
    assert int(metric.count) == 0 and metric.scores == []
    plain = TOPIQMetric(net=net)
    plain.update(*pairs[0])
    assert plain.compute().shape == () and torch.allclose(plain.compute(), want[:2].mean(), atol=1e-5)


def test_merged_metrics_give_the_whole_data_mean(net, loss_fn, pairs):
    """Two ranks' states reduced by sum (what DDP sync does) give the mean over all images."""
    a, b = TOPIQMetric(net=net, return_std=True), TOPIQMetric(net=net, return_std=True)
    a.update(*pairs[0])
    b.update(*pairs[1])
    b.update(*pairs[2])
    a.merge_state(b)
    want = _all_scores(loss_fn, pairs)
    out = a.compute()
    assert torch.allclose(out["mean"], want.mean(), atol=1e-5)
    assert torch.allclose(out["std"], want.std(), atol=1e-5)
    # Not the mean of the two ranks' means (2 vs 4 images).
    assert not torch.allclose(out["mean"], (want[:2].mean() + want[2:].mean()) / 2, atol=1e-6)


def test_network_frozen_and_never_in_state_dict(net, pairs):
    metric = TOPIQMetric(net=net)
    assert metric.state_dict() == {}
    metric.persistent(True)
    assert set(metric.state_dict()) == {"score_sum", "score_sq_sum", "count"}
    assert list(metric.parameters()) == [] and metric.loss.net is net
    assert metric.higher_is_better is True and metric.is_differentiable is False
    assert metric.full_state_update is False
    pred = pairs[0][0].clone().requires_grad_(True)
    metric.update(pred, pairs[0][1])
    assert pred.grad is None and not metric.score_sum.requires_grad


def test_to_moves_the_network_with_the_states(net):
    metric = TOPIQMetric(net=copy.deepcopy(net))
    moved = []
    # What .cuda() does on a GPU machine, observable on CPU: every tensor, the
    # network's included, goes through fn.
    metric.loss.net._apply = lambda fn, recurse=True: moved.append(fn) or metric.loss.net  # type: ignore[method-assign]
    metric.to(torch.device("cpu"))
    assert moved, "_apply did not reach the frozen network"


def test_nr_metric_matches_nr_score(nr_net, pairs):
    metric = TOPIQNRMetric(net=nr_net, resize=None)
    for p, _ in pairs[:2]:
        metric.update(p)
    ref = TOPIQNRLoss(net=nr_net, resize=None)
    with torch.no_grad():
        want = torch.cat([ref.score(p) for p, _ in pairs[:2]])
    assert torch.allclose(metric.compute(), want.mean(), atol=1e-5)


def test_bad_input_is_named(net, pairs):
    metric = TOPIQMetric(net=net)
    with pytest.raises(ValueError, match="pred"):
        metric.update(pairs[0][0][:, :, :16, :16], pairs[0][1][:, :, :16, :16])
    with pytest.raises(TypeError, match="return_std"):
        TOPIQMetric(net=net, return_std="yes")  # type: ignore[arg-type]


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # import torchmetrics -> ImportError
    monkeypatch.delitem(sys.modules, "topiq_loss.metrics.topiq")  # restored after the test
    with pytest.raises(ImportError, match=re.escape("pip install topiq-loss[metrics]")):
        importlib.import_module("topiq_loss.metrics.topiq")
