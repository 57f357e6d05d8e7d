"""0.4's module paths and pickles keep working through 0.5 (topiq_loss/_compat.py)."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import pytest
import torch

import topiq_loss
from topiq_loss._compat import ALIASES

REPO = Path(__file__).resolve().parents[1]
#: The last commit of the 0.4 layout (everything in one folder).
V04_COMMIT = "db4544d"


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_old_path_is_the_new_module_with_a_warning(old):
    new = importlib.import_module(ALIASES[old])
    sys.modules.pop(old, None)
    category = DeprecationWarning if old.endswith("basicsr_loss") else FutureWarning
    with pytest.warns(category, match=f"{old} is deprecated .* import {ALIASES[old]} instead"):
        mod = importlib.import_module(old)
    assert mod is new
    assert sys.modules[old] is new


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_no_file_left_at_the_old_path(old):
    rel = old.split(".")[1:]
    assert not (REPO / "topiq_loss" / Path(*rel)).with_suffix(".py").exists()
    assert not (REPO / "topiq_loss" / Path(*rel) / "__init__.py").exists()


def test_monkeypatch_through_the_old_name_reaches_the_code(monkeypatch):
    import topiq_loss.weights.registry as registry

    with pytest.warns(FutureWarning):
        sys.modules.pop("topiq_loss.hub", None)
        old_hub = importlib.import_module("topiq_loss.hub")
    sentinel = object()
    monkeypatch.setattr(old_hub, "_SENTINEL_FOR_TEST", sentinel, raising=False)
    assert importlib.import_module("topiq_loss.weights.hub")._SENTINEL_FOR_TEST is sentinel
    assert registry.REGISTRY is topiq_loss.REGISTRY


def test_attribute_access_on_the_package(monkeypatch):
    monkeypatch.delitem(sys.modules, "topiq_loss.robust", raising=False)
    if "robust" in vars(topiq_loss):  # getattr would import it
        monkeypatch.delattr(topiq_loss, "robust")
    with pytest.warns(FutureWarning, match="topiq_loss.robust is deprecated"):
        mod = topiq_loss.robust
    assert mod is importlib.import_module("topiq_loss.functional.robust")
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        topiq_loss.not_a_module  # noqa: B018


def test_packages_keep_their_04_names():
    # these four were modules in 0.4 and are packages now; their names stay importable
    from topiq_loss.cli import main  # noqa: F401
    from topiq_loss.functional import reduce_loss, topiq_fr_loss  # noqa: F401
    from topiq_loss.metrics import TOPIQMetric, TOPIQNRMetric  # noqa: F401
    from topiq_loss.weights import REGISTRY, WEIGHTS, WeightsEntry, WeightsError  # noqa: F401


_WRITER = r"""
import sys, warnings
import torch
warnings.simplefilter("ignore")
import topiq_loss
assert topiq_loss.__file__.startswith(sys.argv[2]), topiq_loss.__file__
from topiq_loss import TOPIQLoss, TOPIQNRLoss
torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
x = torch.rand(2, 3, 48, 40, generator=g)
y = (x + 0.1 * torch.rand(2, 3, 48, 40, generator=g)).clamp(0, 1)
fr = TOPIQLoss(weights="random", keep_in_state_dict=True, reduction="none")
nr = TOPIQNRLoss(weights="random", reduction="none")
with torch.no_grad():
    out = {"fr": fr, "nr": nr, "x": x, "y": y, "fr_values": fr(x, y), "nr_values": nr(x)}
torch.save(out, sys.argv[1])
"""


@pytest.fixture(scope="module")
def pickle_from_04(tmp_path_factory) -> Path:
    """A torch.save of 0.4 losses, written by 0.4's own code (from git history) in a
    subprocess, with the values 0.4 computed."""
    try:
        blob = subprocess.run(
            ["git", "-C", str(REPO), "archive", V04_COMMIT, "topiq_loss"], check=True, capture_output=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"0.4's code (commit {V04_COMMIT}) is not in this checkout's git history: {e}")
    root = tmp_path_factory.mktemp("v04")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(root, filter="data")
    out = root / "losses04.pt"
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", _WRITER, str(out), str(root)], check=True, env=env, cwd=root, timeout=300)
    return out


def test_a_04_pickle_loads_scores_the_same_and_stays_frozen(pickle_from_04, monkeypatch):
    for old in ALIASES:  # as in a fresh process: the old names not imported yet
        monkeypatch.delitem(sys.modules, old, raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        saved = torch.load(pickle_from_04, weights_only=False)
    assert any(issubclass(w.category, FutureWarning) and "topiq_loss.loss is deprecated" in str(w.message) for w in seen)
    fr, nr = saved["fr"], saved["nr"]
    assert type(fr) is topiq_loss.TOPIQLoss and type(nr) is topiq_loss.TOPIQNRLoss
    with torch.no_grad():
        torch.testing.assert_close(fr(saved["x"], saved["y"]), saved["fr_values"], atol=1e-5, rtol=0)
        torch.testing.assert_close(nr(saved["x"]), saved["nr_values"], atol=1e-5, rtol=0)
    # frozen after the round trip: a parent toggling requires_grad cannot make them trainable
    parent = torch.nn.ModuleDict({"fr": fr, "nr": nr})
    parent.requires_grad_(True)
    assert [n for n, p in parent.named_parameters() if p.requires_grad] == []
    x = saved["x"].clone().requires_grad_(True)
    fr(x, saved["y"]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
