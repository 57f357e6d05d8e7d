"""Network construction that leaves torch's global random stream alone.

``nn.Module`` initialisers draw from the global generator. Every network this package
builds (TOPIQ's through :func:`~topiq_loss.build_network`, LPIPS's in
:class:`~topiq_loss.models.lpips.LPIPSNetwork`) is constructed inside
:func:`seeded_init`: the global state is saved, seeded from the network's name, and
restored afterwards. Random weights (``weights="random"``) are therefore the same for
a given kind of network whatever was built, drawn or seeded before, and building a
loss never changes a user's stream.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch

__all__ = ["init_seed", "seeded_init"]


def init_seed(name: str) -> int:
    """A 63-bit seed from ``name``, the same on every platform and run (not Python's
    salted ``hash``)."""
    digest = hashlib.sha256(f"topiq_loss:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextlib.contextmanager
def seeded_init(name: str) -> Iterator[None]:
    """Run the block with torch's global generator seeded from ``name``; its state is
    restored on exit, so the block's draws are not taken from the caller's stream.

    CUDA generators are saved and seeded too where CUDA is already initialised (a network
    built on a CUDA default device draws there); an uninitialised CUDA is left untouched.
    """
    cuda_ready = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    devices = list(range(torch.cuda.device_count())) if cuda_ready else []
    seed = init_seed(name)
    with torch.random.fork_rng(devices=devices):
        # Not torch.manual_seed: it would queue a seed for a CUDA not yet initialised,
        # applied later, outside this block.
        torch.default_generator.manual_seed(seed)
        for index in devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield
