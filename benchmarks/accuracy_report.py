"""The accuracy contract, case by case: float32 paths against the same network in float64.

For each case of tests/accuracy_cases.py (synthetic shapes and scikit-image photographs
with JPEG / blur / noise; seeded, untrained weights with non-trivial BatchNorm statistics):
the relative L2 error of the input gradient of this package's default (fused) path, of its
unfused path, and of pyiqa's CFANet in float32, each against float64; and the largest score
difference to pyiqa's float32. The contract: geometric mean <= 5e-3, no case > 1e-1,
scores within 1e-4 of pyiqa.

    python benchmarks/accuracy_report.py          # TOPIQ-FR, case by case
    python benchmarks/accuracy_report.py --nr     # TOPIQ-NR, both ResNet50 layouts, summary
    python benchmarks/accuracy_report.py --swin   # the Swin-B layouts (ava_swin, face_swin), summary
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from accuracy_cases import contract_cases, geomean, rel_error, score_and_grad  # noqa: E402
from pyiqa_oracle import build_reference_fr  # noqa: E402
from seeded_weights import seeded_state_dict  # noqa: E402

from topiq_loss import CFANetFR, CFANetNR, topiq_nr  # noqa: E402


def main() -> None:
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    net = CFANetFR()
    state = seeded_state_dict(net.state_dict())
    net.load_state_dict(state)
    fused = net.requires_grad_(False).eval()
    plain = copy.deepcopy(fused)
    plain.semantic_model.set_fused(False)
    net64 = copy.deepcopy(plain).double()
    ref = build_reference_fr()
    if ref is not None:
        ref.load_state_dict(state)
        ref.requires_grad_(False)
    else:
        print("# pyiqa not installed: its columns are n/a", file=sys.stderr)
    cols = {"fused (default)": fused, "unfused": plain, "pyiqa fp32": ref}
    errs: dict[str, list[float]] = {k: [] for k in cols if cols[k] is not None}
    print(f"| {'case':<28} | " + " | ".join(f"{k:>15}" for k in cols) + f" | {'score vs pyiqa':>14} |")
    print(f"|{'-' * 30}|" + "|".join("-" * 17 for _ in cols) + f"|{'-' * 16}|")
    worst_score = 0.0
    for name, dist, target in contract_cases():
        _, g64 = score_and_grad(net64, dist.double(), target.double())
        cells, scores = [], {}
        for k, model in cols.items():
            if model is None:
                cells.append(f"{'n/a':>15}")
                continue
            s, g = score_and_grad(model, dist, target)
            scores[k] = s
            errs[k].append(rel_error(g, g64))
            cells.append(f"{errs[k][-1]:>15.2e}")
        ds = (scores["fused (default)"] - scores["pyiqa fp32"]).abs().max().item() if ref is not None else float("nan")
        worst_score = max(worst_score, ds)
        print(f"| {name:<28} | " + " | ".join(cells) + f" | {ds:>14.1e} |")
    print("| geometric mean               | " + " | ".join(f"{geomean(errs[k]):>15.2e}" if k in errs else f"{'n/a':>15}" for k in cols) + f" | {'':>14} |")
    print("| max                          | " + " | ".join(f"{max(errs[k]):>15.2e}" if k in errs else f"{'n/a':>15}" for k in cols) + f" | {worst_score:>14.1e} |")


def main_nr() -> None:
    """Both NR layouts over the same cases: scores against pyiqa (as given and with its
    eval-mode resize to 384), input gradients against float64 (ours and pyiqa's fp32)."""
    from pyiqa_oracle import build_reference_nr

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    for aesthetics in (False, True):
        net = CFANetNR.aesthetics() if aesthetics else CFANetNR()
        state = seeded_state_dict(net.state_dict(), seed=7)
        net.load_state_dict(state)
        net.requires_grad_(False).eval()
        net64 = copy.deepcopy(net).double()
        net64.semantic_model.set_fused(False)
        refs = [build_reference_nr(aesthetics, test_img_size=size) for size in (None, 384)]
        if refs[0] is None:
            sys.exit("pyiqa and timm are needed: pip install timm && pip install --no-deps pyiqa==0.1.16")
        for r in refs:
            r.load_state_dict(state)
            r.eval()
        worst, ours, theirs = 0.0, [], []
        for _, dist, _ in contract_cases():
            with torch.no_grad():
                for resize, r in zip((None, 384), refs, strict=True):
                    got = topiq_nr(dist, net=net, resize=resize)
                    worst = max(worst, (got - r(dist).reshape(-1)).abs().max().item())
            _, g64 = score_and_grad(lambda x, _, m=net64: m(x), dist.double(), None)
            ours.append(rel_error(score_and_grad(lambda x, _, m=net: topiq_nr(x, net=m), dist, None)[1], g64))
            theirs.append(rel_error(score_and_grad(lambda x, _, m=refs[0]: m(x), dist, None)[1], g64))
        print(
            f"{'aesthetics' if aesthetics else 'quality':<10} {len(ours)} cases: max |score - pyiqa| {worst:.1e}; "
            f"gradient error vs float64: fused geomean {geomean(ours):.2e}, max {max(ours):.2e}; "
            f"pyiqa fp32 geomean {geomean(theirs):.2e}, max {max(theirs):.2e}"
        )


def main_swin() -> None:
    """Both Swin-B layouts over the same cases (every image resized to 384x384 by the
    network): scores against pyiqa's CFANet with its own Swin, input gradients of the
    default (SDPA) path and of pyiqa's fp32 against torchvision's path in float64.
    pyiqa's seeded random weights, LayerNorm affines moved away from (1, 0)."""
    from pyiqa_oracle import build_reference_swin_nr

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    for aesthetics in (True, False):
        with torch.random.fork_rng():
            torch.manual_seed(38)
            ref = build_reference_swin_nr(aesthetics=aesthetics)
            if ref is None:
                sys.exit("pyiqa and timm are needed: pip install timm && pip install --no-deps pyiqa==0.1.16")
            with torch.no_grad():
                for m in ref.modules():
                    if isinstance(m, torch.nn.LayerNorm) and m.weight is not None:
                        m.weight.add_(0.2 * torch.randn(m.weight.shape))
                        m.bias.add_(0.1 * torch.randn(m.bias.shape))
        ref.requires_grad_(False).eval()
        net = CFANetNR.swin_aesthetics() if aesthetics else CFANetNR.swin()
        net.load_state_dict(ref.state_dict(), strict=True)
        net.requires_grad_(False).eval()
        net64 = copy.deepcopy(net).double()
        net64.semantic_model.set_fused(False)
        worst, ours, theirs = 0.0, [], []
        for _, dist, _ in contract_cases():
            _, g64 = score_and_grad(lambda x, _, m=net64: m(x), dist.double(), None)
            s, g = score_and_grad(lambda x, _, m=net: m(x), dist, None)
            s_ref, g_ref = score_and_grad(lambda x, _, m=ref: m(x), dist, None)
            worst = max(worst, (s - s_ref).abs().max().item())
            ours.append(rel_error(g, g64))
            theirs.append(rel_error(g_ref, g64))
        print(
            f"{'ava_swin' if aesthetics else 'face_swin':<10} {len(ours)} cases: max |score - pyiqa| {worst:.1e}; "
            f"gradient error vs float64: default geomean {geomean(ours):.2e}, max {max(ours):.2e}; "
            f"pyiqa fp32 geomean {geomean(theirs):.2e}, max {max(theirs):.2e}",
            flush=True,
        )


if __name__ == "__main__":
    {"--nr": main_nr, "--swin": main_swin}.get(next(iter(sys.argv[1:]), ""), main)()
