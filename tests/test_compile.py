"""torch.compile: the network is one graph, shapes go dynamic, results match eager."""

from __future__ import annotations

import pytest
import torch
from conftest import distort, smooth_images
from torch._dynamo.testing import CompileCounter

from topiq_loss import TOPIQLoss

SIZES = [(48, 40), (64, 56), (97, 61)]


def _pairs():
    for i, (h, w) in enumerate(SIZES):
        target = smooth_images(2, h, w, seed=40 + i)
        yield distort(target, 50 + i), target


def test_network_compiles_without_graph_break_and_dynamic_sizes(net):
    """fullgraph=True fails on any graph break inside the network. After the first
    size change the shapes are dynamic: three sizes compile twice, not three times."""
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(net, backend=counter, fullgraph=True)
    for dist, target in _pairs():
        d = dist.clone().requires_grad_(True)
        s = compiled(d, target)
        (g,) = torch.autograd.grad(s.sum(), d)
        d0 = dist.clone().requires_grad_(True)
        s0 = net(d0, target)
        (g0,) = torch.autograd.grad(s0.sum(), d0)
        assert torch.allclose(s, s0, atol=1e-5)
        assert ((g - g0).norm() / g0.norm()).item() <= 1e-4
    assert counter.frame_count == 2


@pytest.mark.parametrize("backend", ["aot_eager"])
def test_compiled_loss_matches_eager(net, backend):
    """Through TOPIQLoss: input checks run eagerly (one break before the network) and still
    refuse bad inputs once compiled."""
    torch._dynamo.reset()
    loss_fn = TOPIQLoss(net=net)
    compiled = torch.compile(loss_fn, backend=backend)
    target = smooth_images(2, 40, 48, seed=41)
    pred = distort(target, 42)
    out = []
    for fn in (loss_fn, compiled):
        p = pred.clone().requires_grad_(True)
        loss = fn(p, target)
        loss.backward()
        out.append((loss.detach(), p.grad))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-5)
    assert ((out[0][1] - out[1][1]).norm() / out[0][1].norm()).item() <= 1e-4
    # The compiled loss still checks its inputs: a NaN of the same shape (and grad mode)
    # reuses the compiled graph and is refused by the eager check before the network.
    bad = pred.clone()
    bad[0, 0, 0, 0] = float("nan")
    bad.requires_grad_(True)
    with pytest.raises(ValueError, match="`pred` must be finite"):
        compiled(bad, target)


def test_an_nr_loss_and_an_srloss_compile_in_one_process_within_the_recompile_limit():
    """Every eagerly run check has a wrapper of its own: in 0.5 one wrapper's code served
    every check, each new check or argument layout recompiled it, and compiling an NR
    loss and an SRLoss together hit dynamo's recompile limit (8) on it. Minimal (tracing
    the network costs seconds per call): one size, the limit lowered to 4 so that the
    shared wrapper of 0.5 runs out within these three calls; each wrapper now compiles
    at most twice here."""
    import warnings

    from topiq_loss import SRLoss, TOPIQNRLoss

    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nr = torch.compile(TOPIQNRLoss(weights="random", resize=None), backend="eager")
        sr = torch.compile(SRLoss(scale=2, weights="random"), backend="eager")
    x = smooth_images(1, 32, 32, seed=1).requires_grad_(True)
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True, recompile_limit=4):
        nr(x).backward()
        sr(x, distort(x.detach(), 2)).backward()
        nr(x, x.detach()).backward()
    torch._dynamo.reset()


def test_each_eager_check_compiles_on_its_own_budget():
    """The mechanism, cheaply: twelve checks called from one compiled function, each
    with three argument shapes, stay within the recompile limit (0.5's one shared
    wrapper code exceeded it)."""
    from topiq_loss import _checks

    checks = [_checks.eager(lambda x, i=i: float(x.sum()) + i) for i in range(12)]

    def step(x: torch.Tensor) -> torch.Tensor:
        total = x.sum()
        for check in checks:
            total = total + check(x)
        return total

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="eager")
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True, recompile_limit=8):
        for shape in ((3,), (2, 2), (5,)):
            x = torch.ones(shape)
            assert compiled(x).item() == step(x).item()
    torch._dynamo.reset()
