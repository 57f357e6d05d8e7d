"""Random weights: one spelling (``"random"``, or ``None``) everywhere, seeded from the
network's kind so that they are the same whatever was built before, and no build ever
advancing torch's global random stream."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from conftest import distort, smooth_images

import topiq_loss.integrations._common as _common
import topiq_loss.integrations.basicsr as basicsr_plug
import topiq_loss.integrations.neosr as neosr_plug
import topiq_loss.integrations.trainner_redux as redux
from topiq_loss import (
    LPIPSLoss,
    LPIPSPlusLoss,
    TOPIQLoss,
    TOPIQNRLoss,
    build_network,
    build_nr_network,
)
from topiq_loss.metrics.topiq import TOPIQMetric, TOPIQNRMetric
from topiq_loss.weights.lpips import build_lpips_network
from topiq_loss.weights.registry import RANDOM, is_random


def _quiet(build: Callable[[], object]) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random weights: tests only"
        return build()


def _weights(module: object) -> dict[str, torch.Tensor]:
    net = getattr(module, "net", module)
    assert isinstance(net, torch.nn.Module)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- one spelling
def test_is_random_takes_the_two_spellings_only():
    assert is_random(RANDOM) and is_random("random") and is_random(None)
    for other in ("Random", "default", "kadid", "random.pth", "", 0, False):
        assert not is_random(other), other


@pytest.mark.parametrize("spelling", [RANDOM, None])
def test_lpips_losses_and_network_take_random(spelling):
    with pytest.warns(UserWarning, match=r"weights='random': RANDOM backbone"):
        network = build_lpips_network("alex", spelling)
    loss = _quiet(lambda: LPIPSLoss(weights=spelling))
    plus = _quiet(lambda: LPIPSPlusLoss(weights=spelling))
    assert isinstance(loss, LPIPSLoss) and isinstance(plus, LPIPSPlusLoss)
    assert loss.weights_name == plus.weights_name == "random (tests only)"
    assert _same(_weights(network), _weights(loss)) and _same(_weights(loss), _weights(plus))
    assert all(float(w.min()) >= 0 for w in plus.net.lin_weights())


def test_lpips_refuses_other_strings_naming_the_spellings(tmp_path):
    for bad in ("Random", str(tmp_path / "missing.pth")):
        with pytest.raises(Exception, match=r"`weights` must be 'default', 'random' \(or None\) or an existing file"):
            build_lpips_network("alex", bad)


@pytest.mark.parametrize(
    "plug", [basicsr_plug.BasicSRLPIPSPlusLoss, redux.LPIPSPlusLoss, neosr_plug.lpips_plus_loss], ids=["basicsr", "redux", "neosr"]
)
def test_every_lpips_plus_plug_takes_random(plug):
    """TOML has no null: ``weights = "random"`` is neosr's only way to random weights."""
    loss = _quiet(lambda: plug(loss_weight=1.0, weights="random"))
    assert loss.lpips.weights_name == "random (tests only)"
    hr = smooth_images(1, 32, 32, seed=3)
    with torch.no_grad():
        assert float(loss(distort(hr, 4), hr)) > 0.0


def test_the_plugs_metric_cache_keys_random_once(monkeypatch):
    built: list[object] = []
    monkeypatch.setattr(
        _common, "shared_fr_loss", lambda weights, device: (built.append(weights) or torch.nn.Identity(), None)
    )
    _common.cached_fr.cache_clear()
    try:
        cpu = torch.device("cpu")
        assert _common.cached_fr(_common._key("random"), cpu) is _common.cached_fr(_common._key(None), cpu)
        assert built == [RANDOM]
    finally:
        _common.cached_fr.cache_clear()


# ---------------------------------------------------------------- the global stream
BUILDS: dict[str, Callable[[], object]] = {
    "TOPIQLoss": lambda: TOPIQLoss(weights=RANDOM),
    "TOPIQNRLoss": lambda: TOPIQNRLoss(weights=None),
    "build_network-iaa": lambda: build_network(RANDOM, kind="iaa"),
    "build_nr_network": lambda: build_nr_network(RANDOM),
    "TOPIQMetric": lambda: TOPIQMetric(weights=RANDOM),
    "TOPIQNRMetric": lambda: TOPIQNRMetric(weights=RANDOM),
    "LPIPSLoss-vgg": lambda: LPIPSLoss(net="vgg", weights=RANDOM),
    "LPIPSPlusLoss": lambda: LPIPSPlusLoss(weights=RANDOM),
}


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_building_leaves_the_global_rng_alone(name):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    _quiet(BUILDS[name])
    assert torch.equal(torch.get_rng_state(), state), f"{name} advanced torch's global RNG"


def test_building_from_a_file_leaves_the_global_rng_alone(weights_file):
    """A network is initialised before its weights are loaded: that draw is not the user's either."""
    state = torch.get_rng_state()
    TOPIQLoss(weights=weights_file)
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------- seeded by kind
def test_random_weights_do_not_depend_on_the_global_stream_or_build_order():
    torch.manual_seed(0)
    first = _quiet(lambda: TOPIQLoss(weights=RANDOM))
    _quiet(lambda: LPIPSPlusLoss(weights=RANDOM))  # another loss built in between
    nr_first = _quiet(lambda: TOPIQNRLoss(weights=RANDOM))
    torch.manual_seed(99)
    nr_second = _quiet(lambda: build_nr_network(None))
    second = _quiet(lambda: build_network(None, kind="fr"))
    assert _same(_weights(first), _weights(second))
    assert _same(_weights(nr_first), _weights(nr_second))
    # Seeded by kind: quality and aesthetics networks are not drawn from the same seed.
    aesthetics = _weights(_quiet(lambda: build_network(RANDOM, kind="iaa")))
    assert not torch.equal(aesthetics["semantic_model.conv1.weight"], _weights(nr_first)["semantic_model.conv1.weight"])
    target = smooth_images(2, 48, 48, seed=7)
    pred = distort(target, 8)
    with torch.no_grad():
        assert torch.equal(first.score(pred, target), TOPIQLoss(net=second).score(pred, target))


def test_random_lpips_weights_do_not_depend_on_the_global_stream():
    torch.manual_seed(0)
    a = _weights(_quiet(lambda: build_lpips_network("alex", RANDOM)))
    _quiet(lambda: build_lpips_network("vgg", RANDOM))
    torch.manual_seed(5)
    torch.rand(10)
    b = _weights(_quiet(lambda: build_lpips_network("alex", None)))
    assert _same(a, b)
