"""torch.compile of the loss matches eager (small size)."""

from __future__ import annotations

import pytest
import torch

from conftest import distort, smooth_images
from topiq_loss import TOPIQLoss


@pytest.mark.parametrize("backend", ["aot_eager"])
def test_compiled_loss_matches_eager(net, backend):
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
