"""Framework plugs (topiq_loss.integrations): BasicSR, traiNNer-redux, neosr.

traiNNer-redux is not on PyPI and neosr 1.0.0 (from its repository) needs Python 3.12
and CUDA, so both are tested here against stand-ins of their registry contracts (the
plugs were also tried in the real frameworks: docs/integrations.md, "Versions tried"). BasicSR is tested with a stand-in registry in-process and, where
basicsr is installed, end to end in a subprocess through the documented one-liner.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import distort, smooth_images

from topiq_loss import TOPIQLoss, TOPIQNRLoss
from topiq_loss.functional.objectives import anchored_penalty
from topiq_loss.integrations import _common
from topiq_loss.integrations import neosr as neosr_plug
from topiq_loss.integrations import trainner_redux as redux

DOCS = Path(__file__).parents[1] / "docs" / "integrations.md"


def _doc_blocks(section: str, lang: str) -> list[str]:
    text = DOCS.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", body, re.S)


def _yaml(block: str) -> dict:
    yaml = pytest.importorskip("yaml", reason="pyyaml needed to parse the documented YAML")
    return yaml.safe_load(block)


def _u8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8 RGB."""
    return (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _t(a: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def topiq(net) -> TOPIQLoss:
    return TOPIQLoss(net=net, objective="score")


@pytest.fixture(scope="module")
def nr_loss() -> TOPIQNRLoss:
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return TOPIQNRLoss(weights="random", resize=None)


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    """(sr, hr) as (40, 40, 3) uint8 RGB arrays."""
    hr = smooth_images(1, 40, 40, seed=91)
    return _u8(distort(hr, 92)), _u8(hr)


@pytest.fixture()
def cached(monkeypatch, loss_fn, nr_loss):
    """Route the metrics' per-process networks to the session's seeded ones."""
    monkeypatch.setattr(_common, "cached_fr", lambda weights, device: loss_fn)
    monkeypatch.setattr(_common, "cached_nr", lambda weights, device, resize="auto": nr_loss)


# ----------------------------------------------------------------------------- shared


def test_network_built_once_per_options(monkeypatch):
    built = []
    monkeypatch.setattr(_common, "shared_fr_loss", lambda weights, device: (built.append(weights), (torch.nn.Identity(), None))[1])
    _common.cached_fr.cache_clear()
    try:
        cpu = torch.device("cpu")
        assert _common.cached_fr("a.pth", cpu) is _common.cached_fr("a.pth", cpu)
        _common.cached_fr("b.pth", cpu)
        assert built == ["a.pth", "b.pth"]
    finally:
        _common.cached_fr.cache_clear()


def test_numpy_image_checks():
    a = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(ValueError, match=r"`img` must be at least 32x32 pixels after crop_border=5; got 30x30"):
        _common.numpy_image(a, "img", crop_border=5)
    with pytest.raises(TypeError, match="`img2` must be a numpy.ndarray"):
        _common.numpy_image(torch.zeros(40, 40, 3), "img2")
    with pytest.raises(ValueError, match=r"`img` must hold values in 0\.\.255.*max 300"):
        _common.numpy_image(np.full((40, 40, 3), 300.0), "img")
    with pytest.raises(ValueError, match="`img` must be .*got shape \\(40, 40, 4\\)"):
        _common.numpy_image(np.zeros((40, 40, 4), np.uint8), "img")
    with pytest.raises(ValueError, match="`input_order` must be 'HWC' or 'CHW'"):
        _common.numpy_image(a, "img", input_order="NHWC")
    b = a.copy()
    b[..., 0] = 255  # blue in BGR
    x = _common.numpy_image(b, "img")
    assert x.shape == (1, 3, 40, 40) and float(x[0, 2].min()) == 1.0 and float(x[0, 0].max()) == 0.0
    assert b[0, 0, 0] == 255, "the input was modified"


# ----------------------------------------------------------------------------- BasicSR


class _BasicSRRegistry:
    """Stand-in with BasicSR's Registry behaviour: exact names, a second registration refused."""

    def __init__(self):
        self._obj = {}

    def register(self, obj):
        assert obj.__name__ not in self._obj, "already registered"
        self._obj[obj.__name__] = obj

    def get(self, name):
        return self._obj[name]

    def __contains__(self, name):
        return name in self._obj


@pytest.fixture()
def fake_basicsr(monkeypatch):
    losses, metrics = _BasicSRRegistry(), _BasicSRRegistry()
    mods = {name: types.ModuleType(name) for name in ("basicsr", "basicsr.utils", "basicsr.utils.registry")}
    mods["basicsr.utils.registry"].LOSS_REGISTRY = losses
    mods["basicsr.utils.registry"].METRIC_REGISTRY = metrics
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return losses, metrics


def test_basicsr_registration_and_documented_yaml(fake_basicsr, monkeypatch, net):
    import topiq_loss.integrations.basicsr as mod

    losses, metrics = fake_basicsr
    mod = importlib.reload(mod)  # importing registers when basicsr is importable
    asked = []

    def build(weights, **kwargs):
        asked.append(weights)
        return TOPIQLoss(net=net, **kwargs)

    monkeypatch.setattr(mod, "TOPIQLoss", build)  # the end-to-end test loads a real file
    assert "BasicSRTOPIQLoss" in losses and "calculate_topiq" in metrics and "calculate_topiq_nr" in metrics
    assert mod.register_basicsr() is True  # a second registration is a no-op, not an error

    opt = _yaml(_doc_blocks("BasicSR", "yaml")[0])
    for name, metric in opt["val"]["metrics"].items():
        assert name == "psnr" or metric["type"] in metrics
    percep = dict(opt["train"]["perceptual_opt"])
    loss_fn = losses.get(percep.pop("type"))(**percep)  # what basicsr's build_loss does
    assert asked == ["kadid"]
    hr = smooth_images(1, 32, 32, seed=14)
    sr = distort(hr, 15)
    value, style = loss_fn(sr, hr)
    assert style is None
    with torch.no_grad():
        deficit = loss_fn.topiq.score(hr, hr) - loss_fn.topiq.score(sr, hr)
        want = loss_fn.loss_weight * anchored_penalty(deficit).mean()  # the default objective
    # .score runs both images as one batch, the loss one by one: float32 scores then
    # differ by ~1e-6, and the penalty is 1-Lipschitz in them.
    assert torch.allclose(value, want, rtol=1e-4, atol=1e-5 * loss_fn.loss_weight)


def test_basicsr_absent_registers_nothing(monkeypatch, recwarn):
    import topiq_loss.integrations.basicsr as mod

    monkeypatch.setitem(sys.modules, "basicsr", None)  # import basicsr -> ImportError
    monkeypatch.setitem(sys.modules, "basicsr.utils.registry", None)
    assert mod.register_basicsr() is False
    assert not [w for w in recwarn if "basicsr" in str(w.message)]


def _broken_basicsr(tmp_path, monkeypatch, body: str) -> None:
    pkg = tmp_path / "basicsr"
    (pkg / "utils").mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    (pkg / "utils" / "__init__.py").write_text("")
    (pkg / "utils" / "registry.py").write_text(
        "class R(dict):\n    def register(self, obj):\n        self[obj.__name__] = obj\n"
        "LOSS_REGISTRY = R()\nMETRIC_REGISTRY = R()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("basicsr", "basicsr.utils", "basicsr.utils.registry"):
        # setitem first, so that teardown also removes what the test imports: a stand-in
        # left in sys.modules made later find_spec("basicsr") calls see a basicsr.
        monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.delitem(sys.modules, name)


def test_basicsr_broken_by_torchvision_warns_with_the_fix(monkeypatch, tmp_path):
    import topiq_loss.integrations.basicsr as mod

    _broken_basicsr(tmp_path, monkeypatch, "from torchvision.transforms.functional_tensor import rgb_to_grayscale\n")
    monkeypatch.delenv(mod.COMPAT_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "torchvision.transforms.functional_tensor", raising=False)
    with pytest.warns(RuntimeWarning, match="could not be imported.*functional_tensor.*TOPIQ_LOSS_BASICSR_COMPAT=1"):
        assert mod.register_basicsr() is False


def test_basicsr_compat_alias(monkeypatch, tmp_path):
    import torchvision.transforms.functional as tvf

    import topiq_loss.integrations.basicsr as mod

    old = "torchvision.transforms.functional_tensor"
    if importlib.util.find_spec(old) is not None:
        pytest.skip("this torchvision still has functional_tensor: nothing to alias")
    _broken_basicsr(tmp_path, monkeypatch, f"from {old} import rgb_to_grayscale\n")
    monkeypatch.setenv(mod.COMPAT_ENV, "1")
    try:
        assert mod.import_basicsr() is True
        assert sys.modules[old] is tvf
    finally:
        sys.modules.pop(old, None)


def test_basicsr_loss_signature_and_weight(topiq):
    from topiq_loss.integrations.basicsr import BasicSRTOPIQLoss

    hr = smooth_images(2, 32, 32, seed=31)
    loss_fn = BasicSRTOPIQLoss(loss_weight=2.0, reduction="none", topiq=topiq)
    sr = distort(hr, 16)
    base = 1 - topiq.score(sr, hr)
    assert torch.allclose(loss_fn(sr, hr), 2.0 * base)
    w = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    assert torch.allclose(loss_fn(sr, hr, weight=w), 2.0 * base * w.view(-1))
    with pytest.raises(ValueError, match="per-sample weights with 2 elements"):
        loss_fn(sr, hr, weight=torch.ones_like(hr))
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        BasicSRTOPIQLoss(reduction="avg", topiq=topiq)


def test_basicsr_metrics_follow_its_conventions(cached, loss_fn, nr_loss, images):
    from topiq_loss.integrations.basicsr import calculate_topiq, calculate_topiq_nr

    sr, hr = images
    with torch.no_grad():
        want = float(loss_fn.score(_t(sr), _t(hr)))
        want_crop = float(loss_fn.score(_t(sr)[..., 4:-4, 4:-4], _t(hr)[..., 4:-4, 4:-4]))
        want_nr = float(nr_loss.score(_t(sr)))
    bgr, bgr2 = sr[..., ::-1], hr[..., ::-1]
    assert calculate_topiq(bgr, bgr2, crop_border=0, test_y_channel=True) == pytest.approx(want, abs=1e-5)
    assert calculate_topiq(bgr, bgr2, crop_border=4) == pytest.approx(want_crop, abs=1e-5)
    # BGR is what BasicSR passes: read as RGB, the channels would be swapped.
    assert calculate_topiq(sr, hr, crop_border=0) != pytest.approx(want, abs=1e-5)
    x = _common.numpy_image(bgr, "img")
    assert torch.equal(x, _t(sr))
    assert torch.equal(_common.numpy_image(bgr.transpose(2, 0, 1), "img", input_order="CHW"), x)
    assert torch.allclose(_common.numpy_image(bgr.astype(np.float64), "img"), x)
    assert calculate_topiq_nr(bgr, crop_border=0, img2=bgr2) == pytest.approx(want_nr, abs=1e-5)
    with pytest.raises(ValueError, match="`img` and `img2` must have the same shape"):
        calculate_topiq(bgr, bgr2[:36], crop_border=0)


def _basicsr_yaml(tmp_path: Path, weights_file: Path) -> Path:
    """The documented YAML, shrunk: 2 + 1 tiny PNG pairs, a 2-layer network, 2 iterations on the CPU."""
    import cv2

    opt = _yaml(_doc_blocks("BasicSR", "yaml")[0])
    opt["num_gpu"] = 0
    for phase, n in (("train", 2), ("val", 1)):
        hr_dir, lr_dir = tmp_path / phase / "hr", tmp_path / phase / "lr"
        hr_dir.mkdir(parents=True)
        lr_dir.mkdir()
        for i in range(n):
            hr = _u8(smooth_images(1, 64, 64, seed=100 + i))[..., ::-1]  # files hold BGR for cv2
            cv2.imwrite(str(hr_dir / f"{i}.png"), hr)
            cv2.imwrite(str(lr_dir / f"{i}.png"), cv2.resize(hr, (32, 32), interpolation=cv2.INTER_AREA))
        opt["datasets"][phase].update(dataroot_gt=str(hr_dir), dataroot_lq=str(lr_dir))
    opt["datasets"]["train"].update(gt_size=32, num_worker_per_gpu=0, batch_size_per_gpu=1)
    opt["network_g"].update(num_feat=8, num_conv=2)
    opt["train"].update(total_iter=2)
    opt["train"]["perceptual_opt"]["weights"] = str(weights_file)
    opt["val"].update(val_freq=1000)  # train_pipeline still validates once at the end
    opt["val"]["metrics"]["topiq"]["weights"] = str(weights_file)
    del opt["val"]["metrics"]["topiq_nr"]  # no NR weights file here; covered in-process above
    opt["logger"].update(print_freq=1, save_checkpoint_freq=1000)
    path = tmp_path / "train_topiq.yml"
    import yaml

    path.write_text(yaml.safe_dump(opt))
    return path


def test_basicsr_end_to_end(tmp_path, weights_file):
    """The documented one-liner trains 2 iterations with our loss and validates with calculate_topiq."""
    if importlib.util.find_spec("basicsr") is None:
        pytest.skip("basicsr is not installed (`pip install basicsr==1.4.2`)")
    pytest.importorskip("cv2", reason="basicsr needs opencv")
    opt_file = _basicsr_yaml(tmp_path, weights_file)
    env = dict(os.environ, TOPIQ_LOSS_BASICSR_COMPAT="1", PYTHONPATH=str(Path(__file__).parents[1]))
    cmd = [sys.executable, "-m", "topiq_loss.cli.app", "basicsr-train", "-opt", str(opt_file)]  # topiq-loss basicsr-train
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    missing = re.search(r"ModuleNotFoundError: No module named '([^']+)'", log)
    if out.returncode != 0 and missing and not missing.group(1).startswith(("topiq_loss", "torchvision")):
        pytest.skip(f"basicsr cannot import here: it needs {missing.group(1)!r}")
    assert out.returncode == 0, log[-3000:]
    logs = list((tmp_path / "experiments").glob("*/train_*.log"))
    text = logs[0].read_text()
    assert "BasicSRTOPIQLoss" in text and "l_percep" in text
    scores = [float(v) for v in re.findall(r"# topiq: ([-0-9.e]+)", text)]
    # One validation, at the end (untrained seeded weights: any finite score).
    assert len(scores) == 1 and np.isfinite(scores[0]), text[-2000:]


def test_old_import_path_warns_and_still_works(monkeypatch):
    monkeypatch.delitem(sys.modules, "topiq_loss.basicsr_loss", raising=False)
    with pytest.warns(DeprecationWarning, match="import topiq_loss.integrations.basicsr instead") as rec:
        mod = __import__("topiq_loss.basicsr_loss", fromlist=["BasicSRTOPIQLoss"])
    from topiq_loss.integrations.basicsr import BasicSRTOPIQLoss

    assert mod.BasicSRTOPIQLoss is BasicSRTOPIQLoss
    # Attributed to the importer, not to topiq_loss (setup.cfg turns those into errors).
    assert [Path(w.filename).name for w in rec if w.category is DeprecationWarning] == [Path(__file__).name]


# ----------------------------------------------------------------------------- traiNNer-redux


class _ReduxRegistry:
    """Stand-in with traiNNer-redux's Registry contract: lower-cased names, duplicates
    refused, ``get`` lower-cases and falls back to ``name + "_traiNNer"``."""

    def __init__(self, suffix="traiNNer"):
        self._obj, self._suffix = {}, suffix

    def register(self, obj):
        name = obj.__name__.lower()
        assert name not in self._obj, f"An object named '{name}' was already registered"
        self._obj[name] = obj

    def get(self, name):
        name = name.lower()
        found = self._obj.get(name, self._obj.get(f"{name}_{self._suffix}"))
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name):
        return name.lower() in self._obj


EPSILON = 1e-5  # traiNNer-redux's tolerance in tests/test_losses


@pytest.fixture()
def built_from_docs(monkeypatch, net):
    """Build the plugs' TOPIQLoss on the session network, recording what the config asked for."""
    asked = []

    def build(weights, objective, input_range):
        asked.append(weights)
        return TOPIQLoss(net=net, objective=objective, input_range=input_range)

    monkeypatch.setattr(redux, "_TOPIQLoss", build)
    monkeypatch.setattr(neosr_plug, "TOPIQLoss", build)
    return asked


def test_redux_registry_and_documented_yaml(built_from_docs, loss_fn):
    losses, metrics = _ReduxRegistry(), _ReduxRegistry()
    redux.register(losses, metrics)
    redux.register(losses, metrics)  # twice: a no-op
    entries = _yaml(_doc_blocks("traiNNer-redux", "yaml")[0])
    (opt,) = [dict(o) for o in entries["train"]["losses"] if o["type"] == "topiqloss"]
    loss = losses.get(opt.pop("type"))(**opt)  # what its build_loss does
    assert isinstance(loss, redux.TOPIQLoss) and built_from_docs == ["kadid"] and loss.loss_weight == 0.1
    for metric in entries["val"]["metrics"].values():
        assert metrics.get(metric["type"]) in (redux.calculate_topiq_metric, redux.calculate_topiq_nr_metric)
    other = _ReduxRegistry()
    other.register(type("TOPIQLoss", (), {}))
    with pytest.raises(ValueError, match="already has a 'topiqloss' that is not topiq_loss's"):
        redux.register(other, _ReduxRegistry())
    hr = smooth_images(1, 32, 32, seed=5)
    sr = distort(hr, 6)
    with torch.no_grad():  # unweighted: the model multiplies by abs(loss_weight)
        assert torch.allclose(loss(sr, hr), loss_fn.loss_values(sr, hr).mean(), atol=1e-6)


def test_redux_black_vs_black_16px(loss_fn):
    """traiNNer-redux's test_black_vs_black, on its (1, 3, 16, 16) black image."""
    black = torch.zeros(1, 3, 16, 16)
    assert redux.TOPIQLoss(1.0, topiq=loss_fn)(black, black) <= EPSILON


def test_redux_batch_size_invariance(loss_fn):
    """traiNNer-redux's test_batch_size: a duplicated batch gives the same loss."""
    g = torch.Generator().manual_seed(3)
    pred, gt = torch.rand(1, 3, 16, 16, generator=g), torch.rand(1, 3, 16, 16, generator=g)
    loss = redux.TOPIQLoss(1.0, topiq=loss_fn)
    with torch.no_grad():
        one = loss(pred, gt)
        two = loss(torch.cat([pred, pred]), torch.cat([gt, gt]))
    assert one > 0.0
    assert torch.allclose(one, two, atol=1e-6)


def test_small_inputs_are_enlarged_to_32(loss_fn):
    pred, gt = smooth_images(1, 16, 24, seed=8), smooth_images(1, 16, 24, seed=9)
    up = torch.nn.functional.interpolate
    with torch.no_grad():
        want = loss_fn.loss_values(up(pred, size=(32, 48), mode="bilinear"), up(gt, size=(32, 48), mode="bilinear"))
        assert torch.allclose(redux.TOPIQLoss(1.0, topiq=loss_fn)(pred, gt), want.mean(), atol=1e-6)
    p = pred.clone().requires_grad_(True)
    redux.TOPIQLoss(1.0, topiq=loss_fn)(p, gt).backward()
    assert p.grad is not None and p.grad.shape == p.shape and p.grad.abs().sum() > 0


@pytest.mark.parametrize("plug", ["redux", "neosr"])
def test_losses_run_in_float32_under_autocast(loss_fn, plug):
    pred, gt = smooth_images(1, 32, 32, seed=10).bfloat16(), smooth_images(1, 32, 32, seed=11).bfloat16()
    loss = redux.TOPIQLoss(1.0, topiq=loss_fn) if plug == "redux" else neosr_plug.topiq_loss(1.0, topiq=loss_fn)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = loss(pred, gt)
        want = loss_fn.loss_values(pred.float(), gt.float()).mean()
    assert out.dtype == torch.float32 and torch.allclose(out, want, atol=1e-6)


def test_redux_metrics_take_rgb_and_device(cached, loss_fn, nr_loss, images):
    sr, hr = images
    with torch.no_grad():
        want = float(loss_fn.score(_t(sr), _t(hr)))
        want_nr = float(nr_loss.score(_t(sr)))
    metrics = _ReduxRegistry()
    redux.register(_ReduxRegistry(), metrics)
    data = {"img": sr, "img2": hr}  # traiNNer-redux: tensor2img(..., to_bgr=False)
    cpu = torch.device("cpu")
    assert metrics.get("calculate_topiq_metric")(**data, device=cpu) == pytest.approx(want, abs=1e-5)
    assert metrics.get("calculate_topiq_nr_metric")(**data, device=cpu) == pytest.approx(want_nr, abs=1e-5)


# ----------------------------------------------------------------------------- neosr


class _NeosrRegistry(_ReduxRegistry):
    """Stand-in with neosr's Registry contract: exact (not lower-cased) names."""

    def __init__(self):
        super().__init__(suffix="neosr")

    def register(self, obj):
        assert obj.__name__ not in self._obj, f"An object named '{obj.__name__}' was already registered"
        self._obj[obj.__name__] = obj

    def get(self, name):
        found = self._obj.get(name, self._obj.get(f"{name}_{self._suffix}"))
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name):
        return name in self._obj


def test_neosr_registry_documented_toml_and_weighting(built_from_docs, loss_fn):
    losses, metrics = _NeosrRegistry(), _NeosrRegistry()
    neosr_plug.register(losses, metrics)
    neosr_plug.register(losses, metrics)
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads the documented TOML")
    opt = tomllib.loads(_doc_blocks("neosr", "toml")[0])
    percep = dict(opt["train"]["perceptual_opt"])
    loss = losses.get(percep.pop("type"))(**percep)
    assert isinstance(loss, neosr_plug.topiq_loss) and built_from_docs == ["kadid"]
    for metric in opt["val"]["metrics"].values():
        assert metrics.get(metric["type"]) in (neosr_plug.calculate_topiq_metric, neosr_plug.calculate_topiq_nr_metric)
    hr = smooth_images(1, 32, 32, seed=12)
    sr = distort(hr, 13)
    with torch.no_grad():  # weighted: neosr adds the losses as they come
        assert torch.allclose(loss(sr, hr), 0.1 * loss_fn.loss_values(sr, hr).mean(), atol=1e-6)
    black = torch.zeros(1, 3, 16, 16)
    assert loss(black, black) <= EPSILON


def test_neosr_metrics_take_bgr(cached, loss_fn, images):
    sr, hr = images
    with torch.no_grad():
        want = float(loss_fn.score(_t(sr), _t(hr)))
    # neosr's validation: tensor2img() with its default rgb2bgr=True.
    got = neosr_plug.calculate_topiq_metric(img=sr[..., ::-1], img2=hr[..., ::-1])
    assert got == pytest.approx(want, abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(neosr_plug.calculate_topiq_nr_metric(img=sr[..., ::-1], img2=hr[..., ::-1]), float)


@pytest.fixture()
def fresh_means():
    neosr_plug.reset_validation_means()
    yield neosr_plug.VALIDATION_MEANS
    neosr_plug.reset_validation_means()


def test_neosr_metrics_keep_the_true_validation_mean(cached, loss_fn, fresh_means, caplog):
    """neosr 1.0.0 logs ``sum / (n - 1) + 1``; the plug keeps count and sum per round."""
    hrs = [_u8(smooth_images(1, 40, 40, seed=s)) for s in (21, 22, 23)]
    srs = [_u8(distort(_t(hr), 30 + i)) for i, hr in enumerate(hrs)]
    bgr = [(sr[..., ::-1], hr[..., ::-1]) for sr, hr in zip(srs, hrs, strict=True)]
    with caplog.at_level("INFO", logger=neosr_plug.__name__):
        first = [neosr_plug.calculate_topiq_metric(img=sr, img2=hr) for sr, hr in bgr]
    fr = fresh_means["calculate_topiq_metric"]
    assert fr.count == 3 and fr.total == pytest.approx(sum(first), abs=1e-12)
    assert neosr_plug.validation_mean() == pytest.approx(sum(first) / 3, abs=1e-12)
    assert neosr_plug.validation_mean() != pytest.approx(sum(first) / 2 + 1)  # neosr's own figure
    assert f"running mean {sum(first) / 3:.4f} over 3 images" in caplog.text
    # The next validation round shows the first reference again: the mean starts over.
    again = neosr_plug.calculate_topiq_metric(img=bgr[1][0], img2=bgr[0][1])
    assert fr.count == 1 and neosr_plug.validation_mean() == pytest.approx(again, abs=1e-12)
    # The no-reference metric keeps its own tally, its rounds told by the img2 neosr passes too.
    nr = [neosr_plug.calculate_topiq_nr_metric(img=sr, img2=hr) for sr, hr in bgr[:2]]
    assert neosr_plug.validation_mean("calculate_topiq_nr_metric") == pytest.approx(sum(nr) / 2, abs=1e-12)
    assert fr.count == 1
    neosr_plug.reset_validation_means()
    assert fr.count == 0 and fresh_means["calculate_topiq_nr_metric"].count == 0
    assert np.isnan(neosr_plug.validation_mean())
    with pytest.raises(ValueError, match=r"`metric` must be one of \['calculate_topiq_metric', 'calculate_topiq_nr_metric'\]; got 'psnr'"):
        neosr_plug.validation_mean("psnr")


def test_neosr_validation_mean_without_a_reference_keeps_adding(cached, fresh_means, images):
    sr, _ = images
    scores = [neosr_plug.calculate_topiq_nr_metric(img=sr[..., ::-1]) for _ in range(3)]
    nr = fresh_means["calculate_topiq_nr_metric"]
    assert nr.count == 3 and nr.mean == pytest.approx(sum(scores) / 3, abs=1e-12)
