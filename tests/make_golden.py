"""Regenerate tests/golden/cfanet_fr_seeded.npz (run by hand, then commit).

Scores and input gradients of CFANetFR with the seeded test weights on fixed
inputs. When pyiqa is installed, the values are first checked against its
reference CFANet, so the golden file pins the reference's behaviour.

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
    net = CFANetFR().eval()
    state = seeded_state_dict(net.state_dict())
    net.load_state_dict(state, strict=True)
    ref_net = build_reference_fr()
    if ref_net is not None:
        ref_net.load_state_dict(state, strict=True)
    arrays = {}
    for i, shape in enumerate(CASES):
        dist, ref = case_inputs(shape, i)
        s, g = score_and_grad(net, dist, ref)
        if ref_net is not None:
            s_ref, g_ref = score_and_grad(ref_net, dist, ref)
            assert torch.allclose(s, s_ref, atol=1e-5), (s, s_ref)
            assert (g - g_ref).norm() <= 1e-4 * g_ref.norm()
        arrays[f"score_{i}"] = s.numpy()
        arrays[f"grad_{i}"] = g.numpy()
        print(shape, s.tolist(), "checked against pyiqa" if ref_net is not None else "")
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print("wrote", OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
