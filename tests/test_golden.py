"""Committed golden values (made by tests/make_golden.py, checked against pyiqa then):
float32 scores and float64 input gradients.

These pin the model's behaviour where pyiqa is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from accuracy_cases import CASE_MAX, GEOMEAN_MAX, SCORE_TOL, geomean, rel_error
from make_golden import CASES, case_inputs, score_and_grad

GOLDEN = np.load(Path(__file__).parent / "golden" / "cfanet_fr_seeded.npz")


def test_golden_scores_and_gradient_contract(net):
    """Default path: scores to 1e-4, gradients under the float64 accuracy contract."""
    errors = []
    for i, shape in enumerate(CASES):
        dist, ref = case_inputs(shape, i)
        s, g = score_and_grad(net, dist, ref)
        want_s = torch.from_numpy(GOLDEN[f"score_{i}"])
        want_g = torch.from_numpy(GOLDEN[f"grad64_{i}"])
        assert want_g.dtype == torch.float64
        assert s.shape == want_s.shape
        assert (s - want_s).abs().max().item() <= SCORE_TOL
        errors.append(rel_error(g, want_g))
    assert geomean(errors) <= GEOMEAN_MAX, errors
    assert max(errors) <= CASE_MAX, errors


def test_golden_file_is_not_trivial():
    scores = np.concatenate([GOLDEN[f"score_{i}"] for i in range(len(CASES))])
    assert np.ptp(scores) > 0.05  # distinct inputs give distinct scores
    assert all(np.abs(GOLDEN[f"grad64_{i}"]).max() > 0 for i in range(len(CASES)))
