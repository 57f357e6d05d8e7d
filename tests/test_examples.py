"""Each example end to end in smoke mode: few steps, tiny images, a test-made checkpoint."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

EXAMPLES = Path(__file__).parents[1] / "examples"

pytest.importorskip("skimage", reason="the examples need scikit-image (the [examples] extra)")
pytest.importorskip("matplotlib", reason="the examples need matplotlib (the [examples] extra)")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check_pngs(folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / name
        assert path.is_file(), f"{name} was not written"
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) >= 100


def _check_results(results: dict, methods: list[str]) -> None:
    assert list(results) == methods
    for r in results.values():
        assert math.isfinite(r["psnr"]) and math.isfinite(r["topiq"])


CASES = {
    "train_sr": (
        ["--steps", "2", "--batch", "2", "--patch", "64", "--test-size", "64"],
        ["sr_loss_curves.png", "sr_before_after.png"],
        ["bicubic", "L1", "L1 + TOPIQ"],
    ),
    "train_denoiser": (
        ["--steps", "2", "--batch", "2", "--patch", "40", "--test-size", "48"],
        ["denoise_loss_curves.png", "denoise_before_after.png"],
        ["noisy", "L1", "L1 + TOPIQ"],
    ),
    "optimise_image": (
        ["--steps", "3", "--size", "48", "--lr", "0.05"],
        ["optimise_loss_curves.png", "optimise_before_after.png"],
        ["degraded", "TOPIQ", "robust TOPIQ", "TOPIQ + fidelity"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_smoke(name, tmp_path, weights_file, capsys):
    args, pngs, methods = CASES[name]
    # --threads is exercised with the suite's own count: more threads than the worker's
    # share of the cores (one under xdist) made this test 3x slower on a busy machine.
    threads = str(torch.get_num_threads())
    results = _load(name).main([*args, "--weights", str(weights_file), "--out", str(tmp_path), "--threads", threads])
    _check_results(results, methods)
    _check_pngs(tmp_path, pngs)
    out = capsys.readouterr().out
    assert "PSNR dB" in out and "seeded_untrained.pth" in out


def test_optimisation_raises_the_score(tmp_path, weights_file):
    # A few steps against TOPIQ must raise the score (of any weights): the loop really optimises.
    results = _load("optimise_image").main(
        ["--steps", "5", "--size", "48", "--lr", "0.01", "--weights", str(weights_file), "--out", str(tmp_path)]
    )
    assert results["TOPIQ"]["topiq"] > results["degraded"]["topiq"] + 1e-3


def test_random_weights_are_labelled_as_such(tmp_path, capsys):
    mod = _load("optimise_image")
    mod.main(["--steps", "1", "--size", "40", "--weights", "random", "--out", str(tmp_path)])
    # The same label goes into every figure title.
    assert "UNTRAINED random TOPIQ weights" in capsys.readouterr().out
    _check_pngs(tmp_path, ["optimise_loss_curves.png", "optimise_before_after.png"])


#: The scripts whose `--help` runs: the smoke-tested ones, the no-reference example
#: (smoke-tested in test_nr.py) and the face example.
HELP_ONLY = sorted([*CASES, "enhance_no_reference", "face_restoration"])

# Every example's `--help` in ONE fresh interpreter (importing torch is most of a run's
# cost): each script runs as `python SCRIPT --help` would run it, as __main__ with its
# own folder first on sys.path and argv set, and its exit code and output are kept.
_HELP_RUNNER = """
import contextlib, io, json, runpy, sys
out = {}
for path in sys.argv[1:]:
    buf, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv, sys.path[0] = [path, "--help"], str(__import__("pathlib").Path(path).parent)
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # reported, not raised: the other scripts still run
            code, err = 1, io.StringIO(err.getvalue() + repr(exc))
    out[path] = [code, buf.getvalue(), err.getvalue()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, tuple[int, str, str]]:
    paths = [str(EXAMPLES / f"{name}.py") for name in HELP_ONLY]
    proc = subprocess.run([sys.executable, "-c", _HELP_RUNNER, *paths], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return {Path(k).stem: tuple(v) for k, v in got.items()}


@pytest.mark.xdist_group("example_help")
@pytest.mark.parametrize("name", HELP_ONLY)
def test_example_help_runs_as_a_script(helps, name):
    code, stdout, stderr = helps[name]
    assert code == 0, stderr
    assert "--weights" in stdout and "--out" in stdout
    if name == "enhance_no_reference":  # its weights default to the KonIQ-trained NR model
        assert "koniq" in stdout
    if name == "face_restoration":  # the face models are listed among the NR weights
        assert "face_swin" in stdout  # the registry lists the face models


def test_face_example_trains_with_the_face_loss(tmp_path, capsys):
    # Random NR weights (a face checkpoint cannot be downloaded here): the loop, the
    # ground-truth-anchored face term and the figures, not the model's judgement.
    results = _load("face_restoration").main(
        ["--steps", "2", "--size", "48", "--batch", "2", "--weights", "random", "--out", str(tmp_path)]
    )
    assert list(results) == ["degraded", "L1", "L1 + face", "ground truth"]
    assert all(math.isfinite(r["face"]) for r in results.values())
    assert results["L1 + face"]["psnr"] != results["L1"]["psnr"]  # the face term changed the training
    _check_pngs(tmp_path, ["face_loss_curves.png", "face_before_after.png"])
    assert "UNTRAINED random TOPIQ weights" in capsys.readouterr().out


def test_classical_metrics_of_the_examples():
    import torch

    C = _load("_common")
    x = C.centre_crop(C.photo("chelsea"), 96)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert abs(C.vifp(x, x) - 1.0) < 1e-6 and C.vifp(noisy, x) < 0.8
    assert abs(C.ssim(x, x) - 1.0) < 1e-6 and C.ssim(noisy, x) < 0.9
