"""Committed golden values (made by tests/make_golden.py, checked against pyiqa then).

These pin the model's behaviour where pyiqa is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from make_golden import CASES, case_inputs, score_and_grad

GOLDEN = np.load(Path(__file__).parent / "golden" / "cfanet_fr_seeded.npz")


@pytest.mark.parametrize("i", range(len(CASES)), ids=lambda i: "x".join(map(str, CASES[i])))
def test_golden_scores_and_gradients(net, i):
    dist, ref = case_inputs(CASES[i], i)
    s, g = score_and_grad(net, dist, ref)
    want_s = torch.from_numpy(GOLDEN[f"score_{i}"])
    want_g = torch.from_numpy(GOLDEN[f"grad_{i}"])
    assert s.shape == want_s.shape
    assert (s - want_s).abs().max().item() <= 1e-4
    assert ((g - want_g).norm() / want_g.norm()).item() <= 1e-3


def test_golden_file_is_not_trivial():
    scores = np.concatenate([GOLDEN[f"score_{i}"] for i in range(len(CASES))])
    assert np.ptp(scores) > 0.05  # distinct inputs give distinct scores
    assert all(np.abs(GOLDEN[f"grad_{i}"]).max() > 0 for i in range(len(CASES)))
