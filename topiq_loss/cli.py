"""Command line: ``topiq-loss score DIST REF [--weights kadid|pipal|PATH]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .hub import WeightsError
from .loss import TOPIQLoss
from .weights import DEFAULT_WEIGHTS, WEIGHTS


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as a (1, 3, H, W) float32 tensor in [0, 1]."""
    from torchvision.io import ImageReadMode, decode_image

    data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
    img = decode_image(data, mode=ImageReadMode.RGB)
    return img.unsqueeze(0).float().div(255.0)


def _weights_arg(value: str) -> str | None:
    return None if value == "random" else value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topiq-loss", description="TOPIQ-FR image quality.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="print the TOPIQ-FR score of DIST against REF")
    s.add_argument("dist", help="distorted / restored image (PNG, JPEG)")
    s.add_argument("ref", help="reference image of the same size")
    s.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        type=_weights_arg,
        help=f"{' | '.join(WEIGHTS)} | PATH to a checkpoint | random (tests only); "
        f"default {DEFAULT_WEIGHTS}",
    )
    s.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        dist, ref = read_image(args.dist), read_image(args.ref)
        if dist.shape != ref.shape:
            raise ValueError(
                f"DIST and REF must have the same size; got {tuple(dist.shape[-2:])} and "
                f"{tuple(ref.shape[-2:])}"
            )
        loss_fn = TOPIQLoss(weights=args.weights).to(args.device)
        with torch.no_grad():
            score = loss_fn.score(dist.to(args.device), ref.to(args.device))
    except (OSError, RuntimeError, ValueError, TypeError, WeightsError) as exc:
        print(f"topiq-loss: error: {exc}", file=sys.stderr)
        return 2
    print(f"{score.item():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
