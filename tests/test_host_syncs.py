"""Device-to-host synchronisations per call: at most one with value checks, none without.

A sync is any scalar read the dispatcher sees (``aten._local_scalar_dense``, ``aten.is_nonzero``:
``.item()``, ``float()``, ``bool()``, ``if tensor``) plus the value checks' one batched read
(``_checks.read_host``, a ``tolist()``, which on CPU reads memory without a dispatcher op).
"""

from __future__ import annotations

import pytest
import torch
from conftest import distort, smooth_images
from torch.utils._python_dispatch import TorchDispatchMode

from topiq_loss import SRLoss, TOPIQLoss, TOPIQNRLoss, _checks

_SCALAR_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default}


class _ScalarReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _SCALAR_READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _syncs(monkeypatch, step) -> int:
    reads = []
    original = _checks.read_host

    def counted(t):
        reads.append(t.numel())
        return original(t)

    monkeypatch.setattr(_checks, "read_host", counted)
    with _ScalarReads() as mode:
        step()
    return len(reads) + mode.count


@pytest.fixture(scope="module")
def images():
    hr = smooth_images(2, 32, 40, seed=41)
    return distort(hr, 5), hr


@pytest.mark.parametrize("check", [True, False])
def test_full_reference_training_step(monkeypatch, net, images, check):
    loss_fn = TOPIQLoss(net=net, check_values=check)
    sr, hr = images

    def step():
        p = sr.clone().requires_grad_(True)
        loss_fn(p, hr).backward()

    assert _syncs(monkeypatch, step) == (1 if check else 0)


def test_score_objective_cached_target_and_adapter(monkeypatch, net, images):
    sr, hr = images
    published = TOPIQLoss(net=net, objective="score")
    fixed = TOPIQLoss(net=net).with_target(hr)
    adapter = SRLoss(scale=1, topiq=TOPIQLoss(net=net, reduction="none"))
    for fn in (lambda: published(sr, hr), lambda: fixed(sr), lambda: adapter(sr, hr)):
        assert _syncs(monkeypatch, fn) <= 1


def test_no_reference_with_and_without_target(monkeypatch, images):
    from test_objectives import CFANetNR, seeded_state_dict

    nr_net = CFANetNR()
    nr_net.load_state_dict(seeded_state_dict(nr_net.state_dict(), seed=7))
    sr, hr = images
    for check in (True, False):
        nr = TOPIQNRLoss(net=nr_net, check_values=check)
        assert _syncs(monkeypatch, lambda nr=nr: nr(sr, hr)) == (1 if check else 0)
        assert _syncs(monkeypatch, lambda nr=nr: nr(sr)) == (1 if check else 0)


def test_the_checks_still_refuse_nan_in_one_read(net, images):
    sr, hr = images
    bad = sr.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="`target` must be finite; got 1 NaN"):
        TOPIQLoss(net=net)(sr, bad)
    assert TOPIQLoss(net=net, check_values=False)(sr, hr).isfinite()
