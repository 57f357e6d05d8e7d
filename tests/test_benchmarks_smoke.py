"""The benchmark scripts' own logic (no timing): flag restoration, error rows, byte counting."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return _load("gpu_check")


def _flags() -> tuple[bool, bool, str]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()


@pytest.mark.parametrize("enabled", [True, False, None])
def test_tf32_context_restores_the_flags_even_after_an_error(gpu_check, enabled):
    before = _flags()
    with pytest.raises(KeyError), gpu_check.tf32(enabled):
        if enabled is not None:
            assert torch.backends.cuda.matmul.allow_tf32 is enabled and torch.backends.cudnn.allow_tf32 is enabled
        raise KeyError("inside")
    assert _flags() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_gpu_check_without_a_gpu_exits_zero_with_a_message(gpu_check, capsys):
    assert gpu_check.main(["--device", "cuda"]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_a_failing_row_is_reported_in_the_table_and_the_others_still_run(gpu_check):
    import argparse

    prec = gpu_check.PRECISIONS[0]

    def broken(p, t):
        raise RuntimeError("boom at step")

    good = gpu_check.Row("good", "v", prec, lambda p, t: (p * t).mean(), lambda p, t: (p * t).mean((1, 2, 3)))
    bad = gpu_check.Row("bad", "v", prec, broken, broken)
    report = gpu_check.Report(shapes=["1x8"], rows=[bad, good])
    args = argparse.Namespace(budget_bench=60.0, warmup=0, repeats=2)
    gpu_check.run_bench(report, report.rows, ["1x8"], args, torch.device("cpu"))
    text = report.render()
    assert report.failed
    assert "| bad | v | fp32, TF32 off | error [1] |" in text
    assert "[1] bad v fp32, TF32 off, ms 1x8: RuntimeError: boom at step" in text
    assert float(good.cells["ms 1x8"]) >= 0 and "error" not in good.cells["ms 1x8"]


def test_a_spent_budget_leaves_rows_marked_not_run(gpu_check):
    import argparse

    prec = gpu_check.PRECISIONS[0]
    row = gpu_check.Row("m", "v", prec, lambda p, t: p.mean(), lambda p, t: p.mean((1, 2, 3)))
    report = gpu_check.Report(shapes=["1x8"], rows=[row])
    gpu_check.run_bench(report, report.rows, ["1x8"], argparse.Namespace(budget_bench=-1.0, warmup=0, repeats=1), torch.device("cpu"))
    assert "not run (budget)" in report.render() and not report.failed


def test_saved_bytes_counts_each_storage_once_and_skips_weights():
    sweep = _load("resolution_sweep")
    w = torch.randn(1, 3, 1, 1)
    x = torch.rand(2, 3, 16, 16)

    def step(p, t):
        # p * p saves p twice (one storage); p * w saves p and w (w is a weight)
        return ((p * p) + (p * w)).sum()

    got = sweep.saved_bytes(step, x, x, {w.untyped_storage().data_ptr()})
    assert got == x.numel() * x.element_size()
    assert sweep.saved_bytes(step, x, x, set()) == (x.numel() + w.numel()) * 4
    # A constant shaped like a backbone weight (the per-call folded weights) is not an activation.
    folded = torch.randn(64, 3, 7, 7)

    def conv_step(p, t):
        return torch.nn.functional.conv2d(p, folded).sum()

    assert sweep.saved_bytes(conv_step, x, x, set()) == x.numel() * x.element_size()


def test_objectives_networks_table_reports_each_network_and_the_gap_to_l1(capsys):
    """``benchmarks/objectives.py --networks``: one row per random network, in both families,
    with a cosine in [-1, 1] and a gap column that is anchored minus L1 alone."""
    pytest.importorskip("skimage")
    objectives = _load("objectives")
    threads = torch.get_num_threads()
    try:
        objectives.main(["--networks", "1", "--size", "32", "--steps", "1", "--lambdas", "0.1"])
    finally:
        torch.set_num_threads(threads)  # the script pins 2 threads, as its tables were run
    out = capsys.readouterr().out
    title = next(line for line in out.splitlines() if line.startswith("### Blur start"))
    l1 = float(title.rsplit("L1 alone ", 1)[1].split(" dB")[0])
    rows = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith(("| seeded", "| torch init"))]
    assert [r[0] for r in rows] == ["seeded 0", "torch init 0"]
    for r in rows:
        grad, cosine, lam, anchored, gap = float(r[1]), float(r[3]), float(r[4]), float(r[6]), float(r[7])
        assert grad > 0 and -1 <= cosine <= 1 and lam == 0.1
        assert gap == pytest.approx(anchored - l1, abs=6e-3)  # L1 printed to 2 decimals, the rest to 3
    # Two different networks: the table does not repeat one network's figures.
    assert rows[0][1:4] != rows[1][1:4]


def test_bench_swin_counts_saved_activations_without_weights_and_tabulates():
    bench = _load("bench_swin")
    w = torch.randn(64, 64)
    net = torch.nn.Linear(64, 64)

    def step(x):  # saves w (for the gradient to x) and tanh's output, 64 x 64 floats each
        return torch.tanh(x @ w).sum()

    x = torch.randn(64, 64)
    both = bench.saved_bytes(step, x, set())
    without_w = bench.saved_bytes(step, x, {w.untyped_storage().data_ptr()})
    assert both == 2 * w.numel() * 4 and without_w == x.numel() * 4
    assert bench.storages(net) == {net.weight.untyped_storage().data_ptr(), net.bias.untyped_storage().data_ptr()}
    out = bench.table(
        {"ours": [1.0, 3.0, 2.0], "pyiqa CFANet-Swin": [4.0, 4.0, 4.0]},
        {"ours": [2.0, 2.0, 2.0], "pyiqa CFANet-Swin": [2.0, 2.0, 2.0]},
        {"ours": 3 * 2**20},
    )
    assert "| ours | 2.00 | 0.50x | 1.00 | 2.00 | 1.00x | 3 |" in out
    assert "| pyiqa CFANet-Swin | 4.00 | 1.00x | 4.00 | 2.00 | 1.00x | - |" in out
