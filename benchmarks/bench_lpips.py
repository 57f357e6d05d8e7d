"""LPIPS+ / LPIPS beside TOPIQ-FR: forward+backward step time and saved memory.

Same harness as ``bench_loss.py`` (rows take turns, median after one warm-up; saved
bytes = tensors autograd keeps for backward, weights excluded; CUDA peak on CUDA).
All networks have random weights: cost does not depend on them.

    python benchmarks/bench_lpips.py                          # 4x3x256x256 on CPU
    python benchmarks/bench_lpips.py --shapes 4x256 8x128 --repeats 7 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loss import Step, saved_bytes, time_rows  # noqa: E402

from topiq_loss import CFANetFR, LPIPSLoss, LPIPSPlusLoss, TOPIQLoss  # noqa: E402


def build_rows(device: str) -> list[tuple[str, Step, set[int]]]:
    def ptrs(m: torch.nn.Module) -> set[int]:
        # The held network's tensors are buffers (frozen by construction), not parameters.
        return {p.untyped_storage().data_ptr() for p in m.state_dict(keep_vars=True).values()}

    rows: list[tuple[str, Step, set[int]]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: timing only
        topiq = TOPIQLoss(net=CFANetFR()).to(device)
        rows.append(("TOPIQLoss (CFANet-FR, fused ResNet50)", topiq, ptrs(topiq.net)))
        for net in ("alex", "vgg"):
            plus = LPIPSPlusLoss(net=net, weights=None).to(device)
            rows.append((f"LPIPSPlusLoss {net}", plus, ptrs(plus.net)))
            plain = LPIPSLoss(network=plus.net)
            rows.append((f"LPIPSLoss {net} (plain average)", plain, ptrs(plus.net)))
            # Its own network: the setting lives on the network, and the rows above share one.
            ck = LPIPSPlusLoss(net=net, weights=None).to(device).set_grad_checkpointing()
            rows.append((f"LPIPSPlusLoss {net} checkpoint", ck, ptrs(ck.net)))
        try:
            import lpips

            with contextlib.redirect_stdout(None):
                lp = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False).to(device).eval()
            lp.requires_grad_(False)
            rows.append(("lpips package VGG (plain)", lambda p, t: lp(p, t, normalize=True).mean(), ptrs(lp)))
        except ImportError:
            print("# lpips not installed: its row is skipped", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["4x256"], help="BATCHxSIZE, e.g. 4x256")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per row (median), after 1 warm-up")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# torch {torch.__version__}, {name}; forward+backward, median of {args.repeats} (rows in turn)")
    rows = build_rows(dev.type)
    for shape in args.shapes:
        batch, size = (int(v) for v in shape.split("x"))
        g = torch.Generator().manual_seed(size)
        target = torch.rand(batch, 3, size, size, generator=g).to(dev)
        pred = (target + 0.05 * torch.randn(target.shape, generator=g).to(dev)).clamp(0, 1)
        timed = time_rows(rows, pred, target, args.repeats)
        base = timed[0][0]
        print(f"\n## {batch} x 3 x {size} x {size}")
        print(f"| {'loss':<40} | {'ms':>7} | {'x TOPIQ':>7} | {'saved MiB':>9} | {'peak MiB':>8} |")
        print(f"|{'-' * 42}|{'-' * 9}|{'-' * 9}|{'-' * 11}|{'-' * 10}|")
        for (label, step, params), (t, peak) in zip(rows, timed, strict=True):
            saved = saved_bytes(step, pred, target, params)
            pk = f"{peak / 2**20:.0f}" if peak is not None else "n/a"
            print(f"| {label:<40} | {t * 1e3:>7.0f} | {t / base:>7.2f} | {saved / 2**20:>9.0f} | {pk:>8} |")


if __name__ == "__main__":
    main()
