"""The accuracy contract: fast float32 path against the same network in float64."""

from __future__ import annotations

import copy

import pytest
import torch
from accuracy_cases import (
    CASE_MAX,
    GEOMEAN_MAX,
    SCORE_TOL,
    contract_cases,
    geomean,
    rel_error,
    score_and_grad,
)
from conftest import distort, smooth_images

from topiq_loss import topiq_fr

# The contract fixture (ten cases in float32 and float64) is the module's cost: under
# pytest-xdist its tests stay on one worker, so it is computed once.
pytestmark = pytest.mark.xdist_group("accuracy_contract")


def _float64_reference(net):
    """The same weights in float64, run through the official (unfused) modules."""
    ref = copy.deepcopy(net).double()
    ref.semantic_model.set_fused(False)
    return ref


@pytest.fixture(scope="module")
def net64(net):
    return _float64_reference(net)


@pytest.fixture(scope="module")
def contract(net, net64):
    """Per case: name, fast float32 score/grad, float64 score/grad."""
    try:
        import skimage  # noqa: F401

        photos = True
    except ImportError:
        photos = False
    rows = []
    for name, dist, ref in contract_cases(with_photos=photos):
        s32, g32 = score_and_grad(lambda d, r: topiq_fr(d, r, net=net), dist, ref)
        s64, g64 = score_and_grad(net64, dist.double(), ref.double())
        rows.append((name, s32, g32, s64, g64))
    return rows


def test_default_network_runs_the_fused_path(net):
    assert net.semantic_model.fused_enabled
    calls = []
    hook = net.semantic_model.layer2[0].bn1.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            x = torch.rand(1, 3, 32, 32)
            net(x, x)
        assert calls == []  # folded: the BatchNorm modules are not run
        plain = copy.deepcopy(net)
        plain.semantic_model.set_fused(False)
        with torch.no_grad():
            plain(x, x)
        assert len(calls) == 1  # the deep copy carries the hook; unfused, the module runs
    finally:
        hook.remove()


def test_gradient_contract_against_float64(contract):
    errors = {name: rel_error(g32, g64) for name, _, g32, _, g64 in contract}
    report = "\n".join(f"  {k}: {v:.2e}" for k, v in errors.items())
    print("\nrelative L2 error of input gradients vs float64:\n" + report)
    assert len(errors) >= 6  # 10 with scikit-image's photographs (installed in CI)
    assert geomean(list(errors.values())) <= GEOMEAN_MAX, report
    assert max(errors.values()) <= CASE_MAX, report


def test_contract_has_ten_cases_with_photographs(contract):
    pytest.importorskip("skimage", reason="scikit-image provides the photographs")
    assert len(contract) >= 10
    assert sum("-" in name for name, *_ in contract) >= 4


def test_scores_match_float64(contract):
    for name, s32, _, s64, _ in contract:
        assert (s32.double() - s64).abs().max().item() <= SCORE_TOL, name


def test_contract_measure_can_fail(net, net64):
    """Control: a bfloat16 backbone (known to fail the contract) is caught by it."""
    bf16_net = copy.deepcopy(net).set_backbone_autocast(True)
    errors = []
    for i, shape in enumerate([(1, 3, 48, 48), (2, 3, 40, 56), (1, 3, 64, 33)]):
        ref = smooth_images(shape[0], shape[2], shape[3], seed=500 + i)
        dist = distort(ref, 600 + i)

        def bf16(d, r):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return bf16_net(d, r)

        _, g = score_and_grad(bf16, dist, ref)
        _, g64 = score_and_grad(net64, dist.double(), ref.double())
        errors.append(rel_error(g, g64))
    assert geomean(errors) > GEOMEAN_MAX


def _assert_same_in_float64(a, b, shapes, seed):
    for i, shape in enumerate(shapes):
        ref = smooth_images(shape[0], shape[2], shape[3], seed=seed + i).double()
        dist = distort(ref, seed + 50 + i)
        s_a, g_a = score_and_grad(a, dist, ref)
        s_b, g_b = score_and_grad(b, dist, ref)
        assert (s_a - s_b).abs().max().item() <= 1e-9
        assert rel_error(g_a, g_b) <= 1e-6


def test_fused_equals_unfused_in_float64(net, net64):
    """Folding BatchNorm changes no maths: in float64 both paths agree to rounding."""
    fused64 = copy.deepcopy(net).double()
    assert fused64.semantic_model.fused_enabled and not net64.semantic_model.fused_enabled
    _assert_same_in_float64(fused64, net64, [(2, 3, 45, 67), (1, 3, 96, 96)], seed=700)


def test_float64_network_matches_pyiqa_in_float64(net64, reference_net):
    """Ties the float64 yardstick to the reference implementation."""
    _assert_same_in_float64(copy.deepcopy(reference_net).double(), net64, [(2, 3, 33, 47), (1, 3, 80, 64)], seed=900)


def test_scores_match_pyiqa_float32(contract, reference_net):
    """Scores within 1e-4 of pyiqa's own float32 on every contract case."""
    cases = {name: (dist, ref) for name, dist, ref in contract_cases(with_photos=len(contract) > 6)}
    with torch.no_grad():
        for name, s32, *_ in contract:
            dist, ref = cases[name]
            want = reference_net(dist, ref).reshape(-1)
            assert (s32 - want).abs().max().item() <= SCORE_TOL, name
