"""``loss(x, x) == 0`` exactly, with an exactly zero input gradient, on every path.

Every loss and plug, across sizes 16-96 px (plugs enlarge sides under 32 px; the others
take 32 and up) and batches 1-6, random weights. The grid is sampled sparsely (two or
more cases per path, every one at the 1x1 last grid of 32 px) so the module stays cheap. The zero must hold by
construction (the anchor runs the score pass's calls on the same layouts, a batch-1
target is computed at the prediction's batch), not by luck of one thread count.

In 0.5 these failed at 32 px (batches >= 2: the last grid is 1x1 and the anchor's
constant map had other strides), for the plugs at 16-31 px (enlarged to 32), in robust
mode (the 2x box downscale of 64 px gives 32), and for every ``with_target`` of a
batch-1 target scored against a batch of repeated predictions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch

from topiq_loss import (
    DenoiseLoss,
    GeneratorLoss,
    LPIPSLoss,
    LPIPSPlusLoss,
    RandomTransforms,
    SRLoss,
    TOPIQLoss,
    TOPIQNRLoss,
    topiq_fr_loss,
    topiq_fr_target_features,
)
from topiq_loss.integrations import neosr, trainner_redux


@pytest.fixture(scope="module")
def nets():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fr = TOPIQLoss(weights="random")
        nr = TOPIQNRLoss(weights="random", resize=None)
        lpips = LPIPSLoss(weights=None)
        lpips_plus = LPIPSPlusLoss(weights=None)
    return {"fr": fr, "nr": nr, "lpips": lpips, "lpips_plus": lpips_plus}


def _robust(fr: TOPIQLoss) -> TOPIQLoss:
    transforms = RandomTransforms(samples=4, generator=torch.Generator().manual_seed(3))
    return TOPIQLoss(net=fr.net, robust=transforms)


def _with_target_batch1(fr: TOPIQLoss) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def run(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return fr.with_target(t[:1])(p)

    return run


def _functional_batch1(fr: TOPIQLoss) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def run(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return topiq_fr_loss(p, topiq_fr_target_features(t[:1], net=fr.net), net=fr.net)

    return run


#: name -> (builder of ``loss(pred, target)`` from the module's networks, repeated, cases):
#: ``repeated`` makes every target sample the first one (a batch-1 or expanded target).
#: The cases (size, batch) cover 16-96 px and batches 1-6 across the module, each path at
#: 32 px (the 1x1 last grid) with a batch >= 2; the plugs at 16-31 px (they enlarge to 32).
#: Few distinct shapes (square, mostly 32 px): a new shape's first convolutions cost
#: seconds on a CPU, and the cases share them.
LOSSES: dict[str, tuple[Callable[[dict], Callable[..., torch.Tensor]], bool, list[tuple[int, int]]]] = {
    "TOPIQLoss": (lambda n: n["fr"], False, [(32, 1), (32, 2), (32, 3), (32, 4), (32, 5), (32, 6), (33, 2), (48, 4), (64, 3), (96, 2)]),
    "TOPIQLoss-robust": (lambda n: _robust(n["fr"]), False, [(32, 3), (64, 2)]),
    "with_target": (lambda n: lambda p, t: n["fr"].with_target(t)(p), False, [(32, 2), (48, 4)]),
    "with_target-batch1": (lambda n: _with_target_batch1(n["fr"]), True, [(32, 3), (64, 3)]),
    "functional-batch1": (lambda n: _functional_batch1(n["fr"]), True, [(32, 5), (96, 2)]),
    "expanded-target": (lambda n: lambda p, t: n["fr"](p, t[:1].expand_as(t)), True, [(32, 4), (33, 2)]),
    "TOPIQNRLoss-target": (lambda n: n["nr"], False, [(32, 2), (64, 3)]),
    "LPIPSLoss": (lambda n: n["lpips"], False, [(32, 5), (48, 4)]),
    "LPIPSPlusLoss": (lambda n: n["lpips_plus"], False, [(32, 3), (96, 2)]),
    "SRLoss": (
        lambda n: SRLoss(scale=2, topiq=n["fr"], nr_weight=0.5, nr=n["nr"], lpips_weight=0.5, lpips=n["lpips_plus"]),
        False,
        [(32, 3), (64, 2)],
    ),
    "DenoiseLoss": (lambda n: DenoiseLoss("clean", topiq=n["fr"]), False, [(32, 2), (32, 1)]),
    "GeneratorLoss": (
        lambda n: lambda p, t: GeneratorLoss(adversarial_weight=0.0, topiq=n["fr"], lpips_weight=0.5, lpips=n["lpips"])(
            p, t, torch.zeros(p.shape[0], 1)
        )[0],
        False,
        [(32, 4), (48, 4)],
    ),
    "trainner_redux.TOPIQLoss": (lambda n: trainner_redux.TOPIQLoss(1.0, topiq=n["fr"]), False, [(16, 2), (31, 3)]),
    "neosr.topiq_loss": (lambda n: neosr.topiq_loss(1.0, topiq=n["fr"]), False, [(17, 3), (16, 4)]),
    "trainner_redux.LPIPSPlusLoss": (
        lambda n: trainner_redux.LPIPSPlusLoss(1.0, lpips=n["lpips_plus"]), False, [(16, 2), (31, 5)],
    ),
}

CASES = [
    pytest.param(name, size, batch, id=f"{name}-{size}px-b{batch}")
    for name, (_, _, cases) in LOSSES.items()
    for size, batch in cases
]


@pytest.mark.parametrize(("name", "size", "batch"), CASES)
def test_loss_of_x_and_x_is_exactly_zero(nets, name, size, batch):
    build, repeated, _ = LOSSES[name]
    g = torch.Generator().manual_seed(size * 7 + batch)
    target = torch.rand(batch, 3, size, size, generator=g)
    if repeated:
        target = target[:1].expand_as(target).clone()
    pred = target.clone().requires_grad_(True)
    loss = build(nets)(pred, target)
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    assert loss.detach().abs().max().item() == 0.0
    assert grad.abs().max().item() == 0.0


def test_a_channels_last_prediction_is_exactly_zero_at_the_1x1_grid(nets):
    target = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    pred = target.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    loss = nets["fr"](pred, target)
    (grad,) = torch.autograd.grad(loss, pred)
    assert loss.item() == 0.0 and grad.abs().max().item() == 0.0
