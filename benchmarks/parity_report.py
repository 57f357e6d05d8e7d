"""Print the worst score and gradient differences against pyiqa's CFANet.

Same seeded (untrained) weights in both models, the shapes of tests/test_parity.py.

    python benchmarks/parity_report.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import distort, smooth_images  # noqa: E402
from pyiqa_oracle import build_reference_fr  # noqa: E402
from seeded_weights import seeded_state_dict  # noqa: E402
from test_parity import SHAPES, _score_grad  # noqa: E402

from topiq_loss import CFANetFR  # noqa: E402


def main() -> None:
    net = CFANetFR()
    state = seeded_state_dict(net.state_dict())
    net.load_state_dict(state)
    ref = build_reference_fr()
    if ref is None:
        sys.exit("pyiqa and timm are needed: pip install timm && pip install --no-deps pyiqa==0.1.16")
    ref.load_state_dict(state)
    worst_s = worst_g = 0.0
    print(f"| {'shape':<16} | {'max |score diff|':>16} | {'grad rel L2':>11} |")
    for shape in SHAPES:
        target = smooth_images(shape[0], shape[2], shape[3], seed=sum(shape))
        dist = distort(target, seed=1, level=0.08)
        s0, g0 = _score_grad(ref, dist, target)
        s, g = _score_grad(net.eval(), dist, target)
        ds, dg = (s - s0).abs().max().item(), ((g - g0).norm() / g0.norm()).item()
        worst_s, worst_g = max(worst_s, ds), max(worst_g, dg)
        print(f"| {'x'.join(map(str, shape)):<16} | {ds:>16.2e} | {dg:>11.2e} |")
    print(f"worst: score {worst_s:.2e}, gradient {worst_g:.2e}")


if __name__ == "__main__":
    main()
