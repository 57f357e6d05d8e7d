"""x2 super-resolution with PyTorch Lightning and SRLoss, on one or several processes.

The LightningModule owns an ``SRLoss`` (L1 + TOPIQ); the loss network is frozen and hidden,
so it is in no DDP bucket, no optimiser and no Lightning checkpoint. Each logged term of
``SRLoss.terms()`` is averaged over processes (``sync_dist``). Lightning is an optional
extra (``pip install 'topiq-loss[lightning]'``).

    python examples/lightning_sr.py                                  # 1 CPU process
    python examples/lightning_sr.py --devices 2 --strategy ddp       # 2 CPU processes
    python examples/lightning_sr.py --accelerator gpu --devices 4 --strategy ddp
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from train_sr import TinySR, downscale  # noqa: E402

from topiq_loss import SRLoss  # noqa: E402
from topiq_loss.cli.app import add_weights_option  # noqa: E402

try:
    import lightning as L
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise SystemExit("this example needs Lightning: pip install 'topiq-loss[lightning]'") from exc


class Patches(torch.utils.data.Dataset):
    """HR patches of the training photographs; item i is the same on every process."""

    def __init__(self, size: int, length: int, seed: int) -> None:
        self.photos = [C.photo(n) for n in C.TRAIN_PHOTOS]
        self.size, self.length, self.seed = size, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 100003 + i)
        return C.random_patches(self.photos, self.size, 1, gen)[0]


class SRModule(L.LightningModule):
    def __init__(self, weights: str | None, scale: int = 2, lr: float = 5e-4, topiq_weight: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = TinySR(scale)
        self.loss = SRLoss(scale, pixel="l1", topiq_weight=topiq_weight, weights=weights, progress=False)

    def training_step(self, hr: torch.Tensor, batch_idx: int) -> torch.Tensor:
        terms = self.loss.terms(self.model(downscale(hr, self.hparams.scale)), hr)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, sync_dist=True, prog_bar=True)
        return terms["total"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.hparams.lr)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_weights_option(p)
    p.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    p.add_argument("--batch", type=int, default=8, help="patches per step and process (default 8)")
    p.add_argument("--patch", type=int, default=96, help="HR patch size (default 96)")
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator (default cpu)")
    p.add_argument("--devices", type=int, default=1, help="processes / devices (default 1)")
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default auto)")
    p.add_argument("--out", default="example_outputs/lightning", help="log and checkpoint folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)
    L.seed_everything(args.seed, workers=True, verbose=False)
    module = SRModule(args.weights)
    data = torch.utils.data.DataLoader(Patches(args.patch, args.steps * args.batch * args.devices, args.seed), batch_size=args.batch)
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        max_steps=args.steps,
        default_root_dir=args.out,
        enable_progress_bar=sys.stderr.isatty(),
        logger=L.pytorch.loggers.CSVLogger(args.out),
    )
    trainer.fit(module, data)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        print({k: round(v, 5) for k, v in logged.items()})
    return logged


if __name__ == "__main__":
    main()
