"""Every default loss meets the accuracy contract under every autocast dtype.

Under ``torch.autocast`` the network runs in its own dtype (float32) unless a user opts
in with ``set_autocast``: in 0.5 the head followed autocast and, in bfloat16, the
input gradients of TOPIQ-FR and -NR missed the contract (geometric-mean relative error
against float64 1e-2 and 1.4e-2 for 5e-3). CPU autocast rounds as on any device. Per
dtype: the input gradient of a step (forward under autocast, backward outside, the
AMP idiom) against the same network in float64, and ``loss(x, x) == 0`` under autocast.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from accuracy_cases import CASE_MAX, GEOMEAN_MAX, geomean, rel_error
from conftest import distort, smooth_images

from topiq_loss import LPIPSPlusLoss, SRLoss, TOPIQLoss, TOPIQNRLoss
from topiq_loss.integrations import trainner_redux

DTYPES = [torch.bfloat16, torch.float16]
#: Two odd-sized samples: each one's error counts in the geometric mean.
SHAPES = [(2, 3, 41, 56)]


@pytest.fixture(scope="module")
def losses():
    """name -> (loss in float32, the same loss on a float64 copy of its network)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fr = TOPIQLoss(weights="random")
        nr = TOPIQNRLoss(weights="random", resize=None)
        lp = LPIPSPlusLoss(weights=None)
    fr64 = TOPIQLoss(net=copy.deepcopy(fr.net).double())
    nr64 = TOPIQNRLoss(net=copy.deepcopy(nr.net).double(), resize=None)
    lp64 = LPIPSPlusLoss(network=copy.deepcopy(lp.net).double())
    return {
        "TOPIQLoss": (fr, fr64),
        "TOPIQNRLoss": (lambda p, t: nr(p), lambda p, t: nr64(p)),
        "TOPIQNRLoss-target": (nr, nr64),
        "LPIPSPlusLoss": (lp, lp64),
        "SRLoss": (SRLoss(scale=2, topiq=fr, nr_weight=0.5, nr=nr), SRLoss(scale=2, topiq=fr64, nr_weight=0.5, nr=nr64)),
        "trainner_redux.TOPIQLoss": (trainner_redux.TOPIQLoss(1.0, topiq=fr), fr64),
    }


def _grad(loss_fn, pred, target, dtype=None):
    p = pred.clone().requires_grad_(True)
    if dtype is None:
        loss = loss_fn(p, target)
    else:
        with torch.autocast("cpu", dtype=dtype):
            loss = loss_fn(p, target)
    (g,) = torch.autograd.grad(loss.sum(), p)  # backward outside autocast, as AMP does
    return loss, g


@pytest.fixture(scope="module")
def references(losses):
    """name -> per case (pred, target, float64 input gradient)."""
    out: dict[str, list] = {}
    done: dict[int, list] = {}  # the redux plug shares TOPIQLoss's float64 network: computed once
    for name, (_, loss64) in losses.items():
        if id(loss64) in done:
            out[name] = done[id(loss64)]
            continue
        rows = []
        for i, (n, _, h, w) in enumerate(SHAPES):
            target = smooth_images(n, h, w, seed=70 + i)
            pred = distort(target, 80 + i, 0.08)
            rows.append((pred, target, _grad(loss64, pred.double(), target.double())[1]))
        out[name] = done[id(loss64)] = rows
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    "name", ["TOPIQLoss", "TOPIQNRLoss", "TOPIQNRLoss-target", "LPIPSPlusLoss", "SRLoss", "trainner_redux.TOPIQLoss"]
)
def test_input_gradient_meets_the_contract_under_autocast(losses, references, name, dtype):
    loss_fn = losses[name][0]
    errors = []
    for pred, target, want in references[name]:
        loss, g = _grad(loss_fn, pred, target, dtype)
        assert loss.dtype == torch.float32
        errors += [rel_error(g[i], want[i]) for i in range(g.shape[0])]
    assert geomean(errors) <= GEOMEAN_MAX and max(errors) <= CASE_MAX, errors


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_exact_zero_under_autocast(losses, dtype):
    target = smooth_images(2, 32, 32, seed=5)
    for name in ("TOPIQLoss", "TOPIQNRLoss-target", "LPIPSPlusLoss", "SRLoss"):
        loss, g = _grad(losses[name][0], target, target, dtype)
        assert loss.item() == 0.0 and g.abs().max().item() == 0.0, name


def test_half_precision_is_an_explicit_opt_in(losses):
    """set_autocast(True) lets the whole network follow autocast (the head's matrix
    products then run in bfloat16); by default none runs in half precision."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HalfOps(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 and "mm" in str(func):
                HalfOps.count += 1
            return out

    fr = losses["TOPIQLoss"][0]
    opted = TOPIQLoss(net=copy.deepcopy(fr.net)).set_autocast(True)
    target = smooth_images(1, 32, 32, seed=6)
    counts = []
    for loss_fn in (fr, opted):
        HalfOps.count = 0
        with torch.autocast("cpu", dtype=torch.bfloat16), HalfOps(), torch.no_grad():
            loss_fn(distort(target, 7), target)
        counts.append(HalfOps.count)
    assert counts[0] == 0 and counts[1] > 0
    assert opted.amp_backbone and not fr.amp_backbone
