"""Hardening 5 (issue 37): metric states under casts, plug options, `python -m`, inputs the
checks did not know, the neosr round and logger, the CLI's images and pipes, argument names,
bool options, random LPIPS+ in SRLoss, and the range warning once per object."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from topiq_loss import DenoiseLoss, GeneratorLoss, LPIPSPlusLoss, SRLoss, TOPIQLoss, TOPIQNRLoss
from topiq_loss.models.cfanet_nr import CFANetNR

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nr_net() -> CFANetNR:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights warn
        return TOPIQNRLoss(weights="random").net


@pytest.fixture(scope="module")
def lpips_random() -> LPIPSPlusLoss:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LPIPSPlusLoss(weights="random")


def _images(n: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ 1. metric states
CASTS = {
    "set_dtype(bf16)": lambda m: m.set_dtype(torch.bfloat16),
    "set_dtype(fp16)": lambda m: m.set_dtype(torch.float16),
    "half()": lambda m: m.half(),
    "to(fp16)": lambda m: m.to(torch.float16),
    "to(bf16)": lambda m: m.to(torch.bfloat16),
    "set_dtype(fp64)": lambda m: m.set_dtype(torch.float64),
}


@pytest.mark.parametrize("cast", sorted(CASTS))
@pytest.mark.parametrize("kind", ["fr", "nr"])
def test_metric_states_keep_their_dtype_whatever_the_metric_is_cast_to(kind, cast, net, nr_net, monkeypatch):
    pytest.importorskip("torchmetrics")
    from topiq_loss.metrics.topiq import TOPIQMetric, TOPIQNRMetric

    metric = (
        TOPIQMetric(net=net, return_std=True, return_per_image=True) if kind == "fr"
        else TOPIQNRMetric(net=nr_net, resize=None, return_std=True, return_per_image=True)
    )
    x = _images(2)
    args = (x, x) if kind == "fr" else (x,)
    metric.update(*args)  # one real batch, before the cast
    real = metric.compute()["per_image"].clone()
    dtypes = {name: getattr(metric, name).dtype for name in ("score_sum", "score_sq_sum", "count")}
    CASTS[cast](metric)
    assert {name: getattr(metric, name).dtype for name in dtypes} == dtypes
    assert all(t.dtype == torch.float32 for t in metric.scores)
    # 330 more images of known scores: bf16 counts stick at 256, fp16 ones at 2048 sums...
    values = 0.3 + 0.001 * torch.arange(3, dtype=torch.float32)
    monkeypatch.setattr(metric.loss, "score", lambda *a: values.clone())
    for _ in range(110):
        metric.update(*args)
    out = metric.compute()
    assert int(metric.count) == 332
    every = torch.cat([real.double(), values.double().repeat(110)])
    assert float(out["mean"]) == pytest.approx(float(every.mean()), abs=1e-6)
    assert float(out["std"]) == pytest.approx(float(every.std()), rel=1e-4)
    assert out["per_image"].shape == (332,) and out["per_image"].dtype == torch.float32
    metric.reset()  # the defaults kept their dtype too
    assert {name: getattr(metric, name).dtype for name in dtypes} == dtypes


# ------------------------------------------------------------------ 4. plug options
def _plugs():
    from topiq_loss.integrations import basicsr, neosr, trainner_redux

    return {
        "trainner_redux.TOPIQLoss": (trainner_redux.TOPIQLoss, {"loss_weight": 1.0}),
        "trainner_redux.LPIPSPlusLoss": (trainner_redux.LPIPSPlusLoss, {"loss_weight": 1.0}),
        "neosr.topiq_loss": (neosr.topiq_loss, {}),
        "neosr.lpips_plus_loss": (neosr.lpips_plus_loss, {}),
        "basicsr.BasicSRTOPIQLoss": (basicsr.BasicSRTOPIQLoss, {}),
        "basicsr.BasicSRLPIPSPlusLoss": (basicsr.BasicSRLPIPSPlusLoss, {}),
    }


PLUGS = [
    "trainner_redux.TOPIQLoss", "trainner_redux.LPIPSPlusLoss", "neosr.topiq_loss", "neosr.lpips_plus_loss",
    "basicsr.BasicSRTOPIQLoss", "basicsr.BasicSRLPIPSPlusLoss",
]


def _no_build(monkeypatch):
    """Any network build fails the test: a refused option must cost none."""
    import topiq_loss.losses.fr as fr
    import topiq_loss.losses.lpips as lp

    def never(*args, **kwargs):
        raise AssertionError("a network was built before the options were checked")

    monkeypatch.setattr(fr, "build_network", never)
    monkeypatch.setattr(lp, "build_lpips_network", never)


@pytest.mark.parametrize("typo", [{"wieghts": "pipal"}, {"Weights": "pipal"}, {"loss_wieght": 2.0, "zz": 1}])
@pytest.mark.parametrize("plug", PLUGS)
def test_a_plug_refuses_unknown_options_listing_the_valid_ones(plug, typo, monkeypatch):
    cls, base = _plugs()[plug]
    _no_build(monkeypatch)
    first = sorted(typo)[0]
    with pytest.raises(TypeError, match=rf"{cls.__name__}: unknown option '{first}'.*; valid: .*\bweights\b") as info:
        cls(**base, **typo)
    from topiq_loss.integrations._common import plug_options

    valid = plug_options(cls)
    assert "loss_weight" in valid and "weights" in valid and "checkpoint" in valid
    assert info.value.args[0].endswith("valid: " + ", ".join(valid))
    if first in ("wieghts", "Weights"):
        assert "did you mean 'weights'?" in str(info.value)


@pytest.mark.parametrize("plug", PLUGS)
def test_plug_option_errors_name_the_users_key(plug, monkeypatch):
    cls, base = _plugs()[plug]
    _no_build(monkeypatch)
    with pytest.raises(TypeError, match=r"`checkpoint` must be True or False; got 'no'"):
        cls(**base, checkpoint="no")


def test_basicsr_robust_samples_is_named_as_in_the_yaml(monkeypatch):
    from topiq_loss.integrations.basicsr import BasicSRTOPIQLoss

    _no_build(monkeypatch)
    for bad in (0, "2", 1.5, True):
        with pytest.raises(ValueError, match=r"`robust_samples` must be an int >= 1") as info:
            BasicSRTOPIQLoss(robust=True, robust_samples=bad)
        assert "`samples`" not in str(info.value)


@pytest.mark.parametrize("plug", ["trainner_redux.TOPIQLoss", "neosr.topiq_loss"])
def test_a_prebuilt_topiq_of_the_wrong_type_is_refused(plug):
    cls, base = _plugs()[plug]
    with pytest.raises(TypeError, match=r"`topiq` must be a TOPIQLoss or None; got str"):
        cls(**base, topiq="kadid")


def test_plugs_with_valid_options_still_build(loss_fn, lpips_random):
    for name in PLUGS:
        cls, base = _plugs()[name]
        prebuilt = {"lpips": lpips_random} if "LPIPS" in name or "lpips" in name else {"topiq": loss_fn}
        plug = cls(**base, **prebuilt)
        assert plug.loss_weight == 1.0


# ------------------------------------------------------------------ 6. python -m and 0.4's names
_DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, runpy, sys, warnings
    out = {}
    for mod in ("topiq_loss", "topiq_loss.cli", "topiq_loss.cli.app"):
        for name in [n for n in sys.modules if n == "topiq_loss" or n.startswith("topiq_loss.")]:
            del sys.modules[name]  # each spelling as in a fresh `python -m`
        sys.argv = [mod, "--help"]
        text = io.StringIO()
        with warnings.catch_warnings(record=True) as seen, contextlib.redirect_stdout(text):
            warnings.simplefilter("always")
            try:
                runpy.run_module(mod, run_name="__main__", alter_sys=True)
                code = None
            except SystemExit as exc:
                code = exc.code
            except Exception as exc:
                code = f"{type(exc).__name__}: {exc}"
        out[mod] = {"code": code, "usage": "usage: topiq-loss" in text.getvalue(),
                    "warnings": [f"{w.category.__name__}: {w.message}" for w in seen]}
    print(json.dumps(out))
    """
)


def test_python_m_runs_the_command_under_every_spelling_without_runpy_warnings():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _DRIVER], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    for mod, run in runs.items():
        assert run["code"] == 0, (mod, run)
        assert run["usage"], (mod, run)
        assert not [w for w in run["warnings"] if "RuntimeWarning" in w], (mod, run)


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("topiq_loss.cli_score", "new_loss", "topiq_loss.cli.scorer"),
        ("topiq_loss.cli_score", "new_lpips_plus", "topiq_loss.cli.scorer"),
        ("topiq_loss.cli_score", "METRICS", "topiq_loss.cli.scorer"),
    ],
)
def test_04_names_come_back_with_a_future_warning(old, name, new):
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the module path's own warning
        module = importlib.import_module(old)
    with pytest.warns(FutureWarning, match=rf"{old}\.{name} is deprecated .* use {new}\.{name} instead"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018


def test_04_refuse_overwrite_still_refuses_an_input(tmp_path):
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        images = importlib.import_module("topiq_loss.images")
    src = tmp_path / "a.png"
    src.write_bytes(b"x")
    with pytest.warns(FutureWarning, match=r"topiq_loss\.images\.refuse_overwrite is deprecated .*check_outputs"):
        refuse = images.refuse_overwrite
    with pytest.raises(ValueError, match="refusing to overwrite"):
        refuse(str(tmp_path / "." / "a.png"), [src])
    refuse(tmp_path / "b.png", [src])  # another file: fine


# ------------------------------------------------------------------ 7. layouts and weights messages
LAYOUTS = {"sparse_coo": lambda x: x.to_sparse(), "_mkldnn": lambda x: x.to_mkldnn()}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("which", ["pred", "target"])
def test_non_strided_inputs_are_refused_by_name(which, layout, loss_fn, nr_net, lpips_random):
    from topiq_loss.functional import topiq_fr

    if layout == "_mkldnn" and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no mkldnn")
    x = _images()
    bad = LAYOUTS[layout](x)
    pair = (bad, x) if which == "pred" else (x, bad)
    nr = TOPIQNRLoss(net=nr_net, resize=None)
    sr = SRLoss(scale=2, topiq=loss_fn)
    calls = [
        (which, lambda: loss_fn(*pair)),
        (which, lambda: loss_fn.score(*pair)),
        (which, lambda: topiq_fr(*pair, net=loss_fn.net)),
        (which, lambda: lpips_random(*pair)),
        ({"pred": "sr", "target": "hr"}[which], lambda: sr(*pair)),
        ({"pred": "img", "target": "target"}[which], lambda: nr(*pair)),
    ]
    if which == "pred":
        calls += [("img", lambda: nr(bad)), ("img", lambda: nr.score(bad))]
    for name, call in calls:
        with pytest.raises(TypeError, match=rf"`{name}` must be a dense \(strided\) tensor; got layout torch\.{layout}"):
            call()


@pytest.mark.parametrize("url", ["https://example.com/w/cfanet_fr_kadid.pth", "http://host/x.pth", "file:///tmp/x.pth"])
@pytest.mark.parametrize("build", ["fr", "nr", "lpips"])
def test_a_url_as_weights_says_urls_are_not_paths(url, build):
    from topiq_loss import WeightsError

    cls = {"fr": TOPIQLoss, "nr": TOPIQNRLoss, "lpips": LPIPSPlusLoss}[build]
    with pytest.raises(WeightsError, match=r"URLs are not paths") as info:
        cls(weights=url)
    message = str(info.value)
    assert url in message and "TOPIQ_LOSS_MIRROR" in message and "cache" in message
    assert "not found" not in message


def test_a_checkpoint_with_params_ema_only_names_params(tmp_path, seeded_state):
    from topiq_loss import WeightsError
    from topiq_loss.weights.reader import read_weights_file

    path = tmp_path / "net_g_ema.pth"
    torch.save({"params_ema": dict(seeded_state)}, path)
    with pytest.raises(WeightsError, match=r"holds 'params_ema' but no 'params'") as info:
        read_weights_file(path, "a trained CFANet")
    assert "not named tensors" not in str(info.value)
    with pytest.raises(WeightsError, match="'params_ema' but no 'params'"):
        TOPIQLoss(weights=path)
    torch.save({"params": dict(seeded_state), "params_ema": {"x": torch.zeros(1)}}, path)
    assert read_weights_file(path, "a trained CFANet").keys() == seeded_state.keys()


# ------------------------------------------------------------------ 8. neosr
def _neosr_validation(plug, loader, gt, current_iter, metric="calculate_topiq_metric"):
    """neosr's validation loop (neosr/models/image.py nondist_validation), reduced to what
    the metric sees: `calculate_metric(metric_data, opt)` per image, `_idx` as the index."""

    def calculate_metric(data, opt):
        opt = dict(opt)
        return getattr(plug, opt.pop("type"))(**data, **opt)

    def nondist_validation(dataloader, current_iter):
        total = 0.0
        for _idx, val_data in enumerate(dataloader):
            data = {"img": val_data, "img2": gt}
            total += calculate_metric(data, {"type": metric, "weights": "random", "device": "cpu"})
        return total / (_idx + 1)

    return nondist_validation(loader, current_iter)


@pytest.fixture()
def neosr_plug(monkeypatch):
    from topiq_loss.integrations import neosr as plug

    plug.reset_validation_means()
    monkeypatch.setattr(plug, "_warned_no_console", False, raising=False)
    neosr_logger = logging.getLogger("neosr")  # neosr.utils.get_root_logger's name
    monkeypatch.setattr(neosr_logger, "handlers", [])
    monkeypatch.setattr(neosr_logger, "propagate", True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        yield plug
    plug.reset_validation_means()


def _uint8(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((36, 36, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("metric", ["calculate_topiq_metric", "calculate_topiq_nr_metric"])
def test_neosr_round_with_a_reused_ground_truth(neosr_plug, metric):
    gt = _uint8(0)
    loader = [_uint8(s) for s in (1, 2, 3)]
    for it in (1000, 2000):
        neosr_mean = _neosr_validation(neosr_plug, loader, gt, it, metric)
        tally = neosr_plug.VALIDATION_MEANS[metric]
        assert tally.count == 3
        assert tally.mean == pytest.approx(neosr_mean, abs=1e-6)


def test_neosr_rounds_by_iteration_data_set_and_index(neosr_plug):
    gt = _uint8(0)
    first, second = [_uint8(1), _uint8(2)], [_uint8(3)]
    tally = neosr_plug.VALIDATION_MEANS["calculate_topiq_metric"]
    _neosr_validation(neosr_plug, first, gt, 500)
    assert tally.count == 2
    _neosr_validation(neosr_plug, second, gt, 500)  # a second data set at the same iteration
    assert tally.count == 1
    _neosr_validation(neosr_plug, first, gt, 700)
    _neosr_validation(neosr_plug, first, gt, 700)  # validated again at one iteration: the index went back
    assert tally.count == 2
    # Outside neosr's loop the reference still tells rounds apart.
    neosr_plug.reset_validation_means()
    for i, lq in enumerate(first + first):
        neosr_plug.calculate_topiq_metric(lq, _uint8(10 + i % 2), weights="random", device="cpu")
    assert tally.count == 2


def test_neosr_true_means_reach_neosrs_own_logger(neosr_plug):
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    neosr_logger = logging.getLogger("neosr")
    neosr_logger.handlers = [Collect()]
    neosr_logger.propagate = False  # as neosr's get_root_logger leaves it
    old_level = neosr_logger.level
    neosr_logger.setLevel(logging.INFO)
    try:
        _neosr_validation(neosr_plug, [_uint8(1), _uint8(2)], _uint8(0), 100)
    finally:
        neosr_logger.setLevel(old_level)
    assert len(seen) == 2
    assert seen[-1].startswith("calculate_topiq_metric: ") and "true running mean" in seen[-1]
    assert "over 2 images" in seen[-1]


def test_neosr_without_its_logger_warns_once_where_the_means_go(neosr_plug, caplog):
    caplog.set_level(logging.INFO, logger="topiq_loss.integrations.neosr")
    _neosr_validation(neosr_plug, [_uint8(1), _uint8(2)], _uint8(0), 100)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "has no handler yet" in warned[0].getMessage()
    assert sum("true running mean" in r.getMessage() for r in caplog.records) == 2


# ------------------------------------------------------------------ 9. CLI
def _save_tiff(arr: np.ndarray, path: Path, orientation: int, how: str) -> Path:
    from PIL import Image

    im = Image.fromarray(arr)
    if how == "exif":
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, format="TIFF", exif=exif)
    else:
        im.save(path, format="TIFF", tiffinfo={274: orientation})
    return path


@pytest.mark.parametrize("how", ["exif", "tiffinfo"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_grey_tiffs_are_oriented_like_rgb_ones(tmp_path, orientation, how):
    from topiq_loss.cli.images import oriented_size, read_image

    grey = (np.random.default_rng(orientation).random((36, 52)) * 255).astype(np.uint8)
    rgb = read_image(_save_tiff(np.stack([grey] * 3, -1), tmp_path / "rgb.tif", orientation, how))
    turned = {3: 2, 6: -1, 8: 1}[orientation]  # quarter turns counter-clockwise
    expected = torch.from_numpy(np.rot90(grey, turned).astype(np.float32) / 255.0)
    assert torch.equal(rgb[0, 0], expected)
    for name, arr in (("grey8", grey), ("grey16", grey.astype(np.uint16) * 257)):
        path = _save_tiff(arr, tmp_path / f"{name}.tif", orientation, how)
        img = read_image(path)
        assert torch.allclose(img, rgb, atol=1e-6), name
        assert oriented_size(path) == tuple(img.shape[-2:]), name
        with open(path, "rb") as f:  # a file object reads the same
            assert torch.equal(read_image(f), img)


@pytest.mark.parametrize("argv", [["weights", "list"], ["score", "{dir}", "--weights", "random", "-q"]])
def test_a_closed_pipe_ends_the_command_quietly(argv, tmp_path, monkeypatch, capsys):
    from PIL import Image

    from topiq_loss.cli.app import PIPE_CLOSED, main

    for i in range(2):
        Image.fromarray(_uint8(i)).save(tmp_path / f"{i}.png")
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -1` has gone
    closed = io.TextIOWrapper(io.FileIO(write_end, "w"), write_through=False)
    monkeypatch.setattr(sys, "stdout", closed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main([a.replace("{dir}", str(tmp_path)) for a in argv])
    monkeypatch.undo()
    closed.close()  # the flush goes to devnull now: no second error
    assert status == PIPE_CLOSED
    assert "error" not in capsys.readouterr().err.lower()


def test_a_folder_run_skips_files_pil_only_writes(tmp_path, capsys):
    from PIL import Image

    from topiq_loss.cli.app import main
    from topiq_loss.cli.images import image_files

    for i in range(2):
        Image.fromarray(_uint8(i)).save(tmp_path / f"{i}.png")
    Image.fromarray(_uint8(5)).save(tmp_path / "plots.pdf")
    (tmp_path / "notes.txt").write_text("x")
    write_only = [e for e, f in Image.registered_extensions().items() if f not in Image.OPEN]
    assert ".pdf" in write_only
    for ext in write_only:
        (tmp_path / f"other{ext}").write_bytes(b"x")
    assert [p.name for p in image_files(tmp_path)] == ["0.png", "1.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["score", str(tmp_path), "--weights", "random", "--format", "json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 2


# ------------------------------------------------------------------ 10. the caller's names
def test_adapter_errors_name_the_callers_arguments(loss_fn):
    x, nan = _images(1, 40), torch.full((1, 3, 40, 40), float("nan"))
    sr = SRLoss(scale=2, topiq=loss_fn)
    with pytest.raises(ValueError, match=r"^`hr` must be finite"):
        sr(x, nan)
    with pytest.raises(ValueError, match=r"^`sr` must be finite"):
        sr(nan, x)
    with pytest.raises(TypeError, match=r"^`sr` must be a floating-point tensor"):
        sr((x * 255).int(), x)
    with pytest.raises(ValueError, match=r"^`sr` must have 1 \(grey\) or 3"):
        sr(x[:, :2], x[:, :2].clone())
    den = DenoiseLoss(predicts="residual", topiq=loss_fn)
    for args, name in (((x, x, nan), "noisy"), ((nan, x, x), "output"), ((x * 0.5, nan, x), "clean")):
        with pytest.raises(ValueError, match=rf"^`{name}` must be finite"):
            den(*args)
    gan = GeneratorLoss(topiq=loss_fn)
    with pytest.raises(ValueError, match=r"^`real` must be finite"):
        gan(x, nan, torch.zeros(1))


# ------------------------------------------------------------------ 11. bool options
SETTERS = {
    "loss.set_grad_checkpointing": lambda loss, lp, v: loss.set_grad_checkpointing(v),
    "net.set_grad_checkpointing": lambda loss, lp, v: loss.net.set_grad_checkpointing(v),
    "net.set_backbone_autocast": lambda loss, lp, v: loss.net.set_backbone_autocast(v),
    "backbone.set_grad_checkpointing": lambda loss, lp, v: loss.net.semantic_model.set_grad_checkpointing(v),
    "backbone.set_fused": lambda loss, lp, v: loss.net.semantic_model.set_fused(v),
    "backbone.set_fused(channels_last)": lambda loss, lp, v: loss.net.semantic_model.set_fused(True, channels_last=v),
    "lpips.net.set_grad_checkpointing": lambda loss, lp, v: lp.net.set_grad_checkpointing(v),
    "lpips.net.set_backbone_autocast": lambda loss, lp, v: lp.net.set_backbone_autocast(v),
}


@pytest.fixture(scope="module")
def scratch(net, lpips_random):
    """A TOPIQ loss and an LPIPS+ loss on networks of their own, for setters to change."""
    import copy

    return TOPIQLoss(net=copy.deepcopy(net)), copy.deepcopy(lpips_random)


@pytest.mark.parametrize("bad", ["no", "False", 0, 1, None])
@pytest.mark.parametrize("setter", sorted(SETTERS))
def test_bool_settings_take_only_bools(setter, bad, scratch):
    loss, lpips = scratch
    backbone = loss.net.semantic_model
    if bad is None and setter.endswith("(channels_last)"):
        SETTERS[setter](loss, lpips, None)  # None: the device's choice
        assert backbone.channels_last is None
        return
    before = (backbone.fuse, backbone.channels_last, backbone.grad_checkpointing, loss.net.backbone_autocast,
              lpips.net.grad_checkpointing, lpips.net.backbone_autocast)
    name = "channels_last" if "channels_last" in setter else "enabled" if setter == "backbone.set_fused" else "enable"
    with pytest.raises(TypeError, match=rf"`{name}` must be True or False; got {bad!r}"):
        SETTERS[setter](loss, lpips, bad)
    after = (backbone.fuse, backbone.channels_last, backbone.grad_checkpointing, loss.net.backbone_autocast,
             lpips.net.grad_checkpointing, lpips.net.backbone_autocast)
    assert after == before
    for value in (not before[0], True, False):
        SETTERS[setter](loss, lpips, value)
    backbone.set_fused(True, channels_last=None)  # the defaults again
    loss.set_grad_checkpointing(False).set_backbone_autocast(False)
    lpips.set_grad_checkpointing(False).set_backbone_autocast(False)


@pytest.mark.parametrize("build", ["TOPIQLoss", "TOPIQNRLoss", "LPIPSPlusLoss", "TOPIQMetric", "TOPIQNRMetric"])
def test_progress_takes_only_bools(build, monkeypatch):
    import topiq_loss

    if "Metric" in build:
        pytest.importorskip("torchmetrics")
        from topiq_loss.metrics import topiq as metrics

        cls = getattr(metrics, build)
    else:
        cls = getattr(topiq_loss, build)
    _no_build(monkeypatch)
    import topiq_loss.losses.nr as nr
    import topiq_loss.losses.shared as shared

    monkeypatch.setattr(nr, "build_network", lambda *a, **k: pytest.fail("built"))
    monkeypatch.setattr(shared, "build_network", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(TypeError, match=r"`progress` must be True or False; got 'no'"):
        cls(progress="no")


# ------------------------------------------------------------------ 12. random LPIPS+ in the adapters
@pytest.mark.parametrize("adapter", ["SRLoss", "GeneratorLoss"])
def test_random_weights_make_a_random_lpips_term_without_download(adapter, monkeypatch):
    import topiq_loss.weights.lpips as wl

    monkeypatch.setattr(wl, "_torchvision_backbone", lambda *a, **k: pytest.fail("a download was attempted"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = (
            SRLoss(scale=2, weights="random", lpips_weight=0.1) if adapter == "SRLoss"
            else GeneratorLoss(weights="random", lpips_weight=0.1)
        )
    assert isinstance(loss.lpips, LPIPSPlusLoss)
    assert "random" in loss.lpips.weights_name.lower()
    assert "random" in loss.topiq.weights_name.lower()


# ------------------------------------------------------------------ 13. range warning once per object
def _range_warnings(calls) -> int:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for call in calls:
            call()
    return sum("far outside input_range" in str(w.message) for w in seen)


def test_objects_sharing_a_network_each_warn_once(net, nr_net, lpips_random):
    big = _images(1, 32) * 255
    a, b = TOPIQLoss(net=net), TOPIQLoss(net=net)
    assert _range_warnings([lambda: a(big, big), lambda: b.score(big, big), lambda: a(big, big), lambda: b(big, big)]) == 2
    n1, n2 = TOPIQNRLoss(net=nr_net, resize=None), TOPIQNRLoss(net=nr_net, resize=None)
    assert _range_warnings([lambda: n1(big), lambda: n2.score(big), lambda: n1.score(big)]) == 2
    l1, l2 = LPIPSPlusLoss(network=lpips_random.net), LPIPSPlusLoss(network=lpips_random.net)
    assert _range_warnings([lambda: l1(big, big), lambda: l2(big, big), lambda: l2(big, big)]) == 2
    s1, s2 = SRLoss(scale=2, topiq=a), SRLoss(scale=2, topiq=a)
    assert _range_warnings([lambda: s1(big, big), lambda: s2(big, big), lambda: s1(big, big)]) == 2


def test_metrics_sharing_a_network_each_warn_once(net):
    pytest.importorskip("torchmetrics")
    from topiq_loss.metrics.topiq import TOPIQMetric

    big = _images(1, 32) * 255
    m1, m2 = TOPIQMetric(net=net), TOPIQMetric(net=net)
    assert m1.loss.net is m2.loss.net
    assert _range_warnings([lambda: m1.update(big, big), lambda: m2.update(big, big), lambda: m1.update(big, big)]) == 2
