"""LPIPS+ in the framework plugs: built from the documented configs, same conventions as TOPIQ's.

Random LPIPS weights (no download): the values are checked against the LPIPSPlusLoss the
plug holds, not against published numbers.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from conftest import distort, smooth_images
from test_integrations import EPSILON, _doc_blocks, _NeosrRegistry, _ReduxRegistry, _yaml, fake_basicsr  # noqa: F401 (a fixture)

from topiq_loss import LPIPSPlusLoss
from topiq_loss.integrations import _common
from topiq_loss.integrations import neosr as neosr_plug
from topiq_loss.integrations import trainner_redux as redux


def _random_lpips_plus(**options: object) -> LPIPSPlusLoss:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random weights: tests only"
        return LPIPSPlusLoss(**{**options, "weights": None})


@pytest.fixture(scope="module")
def lpips_plus() -> LPIPSPlusLoss:
    return _random_lpips_plus(net="alex")


@pytest.fixture()
def asked(monkeypatch) -> list[dict]:
    """The plugs build random-weight LPIPS+ losses, recording the options the config gave."""
    seen: list[dict] = []

    class Recording(LPIPSPlusLoss):
        def __init__(self, **options: object) -> None:
            seen.append(dict(options))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                super().__init__(**{**options, "weights": None})

    monkeypatch.setattr(_common, "LPIPSPlusLoss", Recording)
    return seen


def _pair(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    hr = smooth_images(2, 32, 40, seed=seed)
    return distort(hr, seed + 1), hr


def test_redux_lpips_plus_from_the_documented_yaml(asked):
    losses, metrics = _ReduxRegistry(), _ReduxRegistry()
    redux.register(losses, metrics)
    redux.register(losses, metrics)  # twice: a no-op
    entries = _yaml(_doc_blocks("traiNNer-redux", "yaml")[0])
    (opt,) = [dict(o) for o in entries["train"]["losses"] if o["type"] == "lpipsplusloss"]
    loss = losses.get(opt.pop("type"))(**opt)  # what its build_loss does
    assert isinstance(loss, redux.LPIPSPlusLoss) and loss.loss_weight == 0.05
    assert asked == [{"net": "alex", "weights": "default", "semantic_layer": 2, "input_range": (0.0, 1.0)}]
    sr, hr = _pair(40)
    with torch.no_grad():  # unweighted: traiNNer-redux multiplies by abs(loss_weight)
        torch.testing.assert_close(loss(sr, hr), loss.lpips.score(sr, hr).mean())
        assert float(loss(sr, hr)) > 0
    black = torch.zeros(1, 3, 16, 16)  # traiNNer-redux's test_black_vs_black
    assert loss(black, black) <= EPSILON


def test_neosr_lpips_plus_from_the_documented_toml(asked):
    losses, metrics = _NeosrRegistry(), _NeosrRegistry()
    neosr_plug.register(losses, metrics)
    neosr_plug.register(losses, metrics)
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads the documented TOML")
    opt = dict(tomllib.loads(_doc_blocks("neosr", "toml")[0])["train"]["dists_opt"])
    loss = losses.get(opt.pop("type"))(**opt)
    assert isinstance(loss, neosr_plug.lpips_plus_loss) and asked[0]["net"] == "alex"
    sr, hr = _pair(42)
    with torch.no_grad():  # weighted: neosr adds the losses as they come
        torch.testing.assert_close(loss(sr, hr), 0.05 * loss.lpips.score(sr, hr).mean())
    assert float(loss(hr, hr)) == 0.0


def test_basicsr_lpips_plus_registration_weighting_and_slots(fake_basicsr, lpips_plus):  # noqa: F811
    import topiq_loss.integrations.basicsr as mod

    losses, metrics = fake_basicsr
    mod = importlib.reload(mod)  # importing registers when basicsr is importable
    assert "BasicSRLPIPSPlusLoss" in losses and "BasicSRTOPIQLoss" in losses and "calculate_topiq" in metrics
    cls = losses.get("BasicSRLPIPSPlusLoss")
    sr, hr = _pair(44)
    base = lpips_plus.score(sr, hr).detach()
    per_sample = cls(loss_weight=2.0, reduction="none", lpips=lpips_plus)
    torch.testing.assert_close(per_sample(sr, hr), 2.0 * base)
    w = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    torch.testing.assert_close(per_sample(sr, hr, weight=w), 2.0 * base * w.view(-1))
    with pytest.raises(ValueError, match="per-sample weights with 2 elements"):
        per_sample(sr, hr, weight=torch.ones_like(hr))
    value, style = cls(as_perceptual=True, lpips=lpips_plus)(sr, hr)
    assert style is None
    torch.testing.assert_close(value, base.mean())
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        cls(reduction="avg", lpips=lpips_plus)


@pytest.mark.parametrize("plug", ["redux", "neosr", "basicsr"])
def test_lpips_plus_plugs_share_the_conventions(plug, lpips_plus):
    from topiq_loss.integrations.basicsr import BasicSRLPIPSPlusLoss

    cls = {"redux": redux.LPIPSPlusLoss, "neosr": neosr_plug.lpips_plus_loss, "basicsr": BasicSRLPIPSPlusLoss}[plug]
    loss = cls(1.0, lpips=lpips_plus)
    # Frozen and hidden: no parameters for the framework's optimiser, always in eval mode.
    assert list(loss.parameters()) == [] and not loss.train().training
    # float32 with autocast off, whatever the inputs' dtype.
    sr, hr = _pair(46)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = loss(sr.bfloat16(), hr.bfloat16())
        want = lpips_plus.score(sr.bfloat16().float(), hr.bfloat16().float()).mean()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want)
    # Gradients reach the prediction; images under 32 px are enlarged, not refused.
    p = smooth_images(1, 20, 24, seed=48).requires_grad_(True)
    loss(p, smooth_images(1, 20, 24, seed=49)).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="`lpips` must be an LPIPSPlusLoss"):
        cls(1.0, lpips=object())
