"""Regenerate tests/golden/cfanet_fr_seeded.npz (run by hand, then commit).

Float32 scores and float64 input gradients of CFANetFR (its unfused, official
modules) with the seeded test weights on fixed inputs. When pyiqa is installed,
the values are first checked against its reference CFANet (scores in float32,
gradients in float64), so the golden file pins the reference's behaviour and the
accuracy contract's yardstick where pyiqa is absent.

    python tests/make_golden.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from pyiqa_oracle import build_reference_fr  # noqa: E402
from seeded_weights import seeded_state_dict  # noqa: E402

from topiq_loss import CFANetFR  # noqa: E402

CASES = [(1, 3, 32, 32), (2, 3, 48, 40), (1, 3, 65, 33), (3, 3, 37, 51)]
OUT = HERE / "golden" / "cfanet_fr_seeded.npz"


def case_inputs(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(1000 + seed)
    ref = rng.uniform(0, 1, shape).astype(np.float32)
    dist = np.clip(ref + 0.1 * rng.standard_normal(shape), 0, 1).astype(np.float32)
    return torch.from_numpy(dist), torch.from_numpy(ref)


def score_and_grad(net: torch.nn.Module, dist: torch.Tensor, ref: torch.Tensor):
    d = dist.clone().requires_grad_(True)
    s = net(d, ref).reshape(-1)
    (g,) = torch.autograd.grad(s.sum(), d)
    return s.detach(), g


def main() -> None:
    import copy

    net = CFANetFR().eval()
    state = seeded_state_dict(net.state_dict())
    net.load_state_dict(state, strict=True)
    net.semantic_model.set_fused(False)
    net64 = copy.deepcopy(net).double()
    ref_net = build_reference_fr()
    if ref_net is not None:
        ref_net.load_state_dict(state, strict=True)
        ref64 = copy.deepcopy(ref_net).double()
    arrays = {}
    for i, shape in enumerate(CASES):
        dist, ref = case_inputs(shape, i)
        s, _ = score_and_grad(net, dist, ref)
        _, g = score_and_grad(net64, dist.double(), ref.double())
        if ref_net is not None:
            s_ref, _ = score_and_grad(ref_net, dist, ref)
            _, g_ref = score_and_grad(ref64, dist.double(), ref.double())
            assert torch.allclose(s, s_ref, atol=1e-5), (s, s_ref)
            assert (g - g_ref).norm() <= 1e-6 * g_ref.norm()
        arrays[f"score_{i}"] = s.numpy()
        arrays[f"grad64_{i}"] = g.numpy()
        print(shape, s.tolist(), "checked against pyiqa" if ref_net is not None else "")
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print("wrote", OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
