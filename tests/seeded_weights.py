"""Deterministic, platform-independent CFANet-FR weights for tests (NOT a trained model).

Drawn from numpy's PCG64 generator rather than torch's init, so the golden values
stay valid across torch versions. Scales keep activations and the GLP gates in a
non-saturated range so that scores react to the inputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def seeded_state_dict(template: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    out = {}
    # Sorted: the values depend on the key names only, not on module registration order.
    for key, ref in sorted(template.items()):
        shape = tuple(ref.shape)
        normal = rng.standard_normal(shape) if shape else np.zeros(())
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            value = np.zeros(())
        elif leaf == "running_var":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "running_mean":
            value = 0.1 * normal
        elif key in ("h_emb", "w_emb"):
            value = 0.02 * normal
        elif len(shape) == 1 and ("bn" in key or "norm" in key or "downsample.1" in key or key.startswith("score_linear.0") or key.startswith("score_linear.3")):
            # normalisation layers: weight ~1, bias ~0; residual branches damped.
            if leaf == "weight":
                value = (0.3 if key.endswith("bn3.weight") else 1.0) + 0.1 * normal
            else:
                value = 0.1 * normal
        elif len(shape) == 1:
            value = 0.02 * normal
        else:
            fan_in = int(np.prod(shape[1:]))
            value = normal * math.sqrt(1.0 / fan_in)
        out[key] = torch.from_numpy(np.asarray(value)).to(ref.dtype)
    return out
