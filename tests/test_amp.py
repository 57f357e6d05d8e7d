"""Mixed precision: CPU bfloat16 autocast here; CUDA float16/bfloat16 where a GPU exists."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import distort, smooth_images

from topiq_loss import TOPIQLoss
from topiq_loss.models.layers import feature_distance

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _value_and_grad(loss_fn, pred, target, device, dtype=None):
    p = pred.to(device).requires_grad_(True)
    t = target.to(device)
    if dtype is None:
        loss = loss_fn(p, t)
    else:
        with torch.autocast(device, dtype=dtype):
            loss = loss_fn(p, t)
    (g,) = torch.autograd.grad(loss, p)
    return loss.detach().float().cpu(), g.float().cpu()


def _check_close_to_fp32(loss_fn, device, dtype):
    target = smooth_images(2, 64, 64, seed=31)
    pred = distort(target, 32, 0.1)
    v32, g32 = _value_and_grad(loss_fn, pred, target, device)
    v, g = _value_and_grad(loss_fn, pred, target, device, dtype)
    assert torch.isfinite(v) and torch.isfinite(g).all()
    assert abs(v.item() - v32.item()) <= 1e-2
    cos = F.cosine_similarity(g.flatten(), g32.flatten(), dim=0).item()
    assert cos >= 0.999, cos
    # identical pred and target: the feature distance must not underflow to sqrt(0)
    v_eq, g_eq = _value_and_grad(loss_fn, target, target, device, dtype)
    assert torch.isfinite(v_eq) and torch.isfinite(g_eq).all()
    return abs(v.item() - v32.item()), cos


def test_cpu_bfloat16_autocast(loss_fn):
    diff, cos = _check_close_to_fp32(loss_fn, "cpu", torch.bfloat16)
    print(f"cpu bf16: |loss - fp32| = {diff:.2e}, grad cosine = {cos:.5f}")


def test_feature_distance_keeps_eps_in_half_precision():
    a = torch.zeros(4, dtype=torch.float16, requires_grad=True)
    d = feature_distance(a, a.detach())
    (g,) = torch.autograd.grad(d.sum(), a)
    naive = torch.sqrt((a - a.detach()) ** 2 + 1e-12)
    assert d.dtype == torch.float16 and (d > 0).all() and torch.isfinite(g).all()
    assert (naive == 0).all()  # what the guard is for: eps underflows in fp16


@pytest.fixture(scope="module")
def cuda_loss(net):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return TOPIQLoss(net=copy.deepcopy(net)).cuda()


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_cuda_autocast(cuda_loss, dtype):
    diff, cos = _check_close_to_fp32(cuda_loss, "cuda", dtype)
    print(f"cuda {dtype}: |loss - fp32| = {diff:.2e}, grad cosine = {cos:.5f}")


@requires_cuda
def test_cuda_fp16_training_step_with_grad_scaler(cuda_loss):
    model = torch.nn.Conv2d(3, 3, 3, padding=1).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    target = smooth_images(2, 64, 64, seed=33).cuda()
    before = model.weight.detach().clone()
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = cuda_loss(target + model(target), target)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert not torch.equal(before, model.weight)


@requires_cuda
def test_cuda_scores_match_cpu(cuda_loss, loss_fn):
    target = smooth_images(2, 48, 64, seed=34)
    pred = distort(target, 35)
    with torch.no_grad():
        assert torch.allclose(cuda_loss.score(pred.cuda(), target.cuda()).cpu(), loss_fn.score(pred, target), atol=1e-4)


def test_amp_backbone_opt_in_runs_backbone_in_half(net):
    """set_backbone_autocast(True) is honoured (and is why it is not the default)."""
    target = smooth_images(1, 48, 48, seed=36)
    pred = distort(target, 37)
    seen = []
    own = copy.deepcopy(net)
    hook = own.semantic_model.register_forward_hook(lambda m, i, o: seen.append(o[-1].dtype))
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            # .score: one backbone pass on the stacked pair (the anchored loss runs the
            # prediction and the target separately, so it would record two per call)
            TOPIQLoss(net=own).score(pred, target)
            TOPIQLoss(net=own).set_backbone_autocast(True).score(pred, target)
    finally:
        hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
