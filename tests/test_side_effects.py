"""No global side effects, no input mutation, thread safety."""

from __future__ import annotations

import copy
import threading

import torch
from conftest import distort, smooth_images

from topiq_loss import TOPIQLoss


def _global_state():
    return {
        "default_dtype": torch.get_default_dtype(),
        "grad_enabled": torch.is_grad_enabled(),
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "autocast_cpu": torch.is_autocast_enabled("cpu"),
        "threads": torch.get_num_threads(),
    }


def test_call_changes_no_global_state_rng_or_inputs(loss_fn):
    target = smooth_images(2, 40, 40, seed=51)
    pred = distort(target, 52)
    pred_copy, target_copy = pred.clone(), target.clone()
    model = torch.nn.Conv2d(3, 3, 1).train()
    before = _global_state()
    rng = torch.get_rng_state()
    p = pred.requires_grad_(True)
    loss_fn(p, target).backward()
    with torch.no_grad():
        loss_fn.score(pred, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_fn(pred, target)
    TOPIQLoss(net=copy.deepcopy(loss_fn.net)).set_grad_checkpointing()(p, target).backward()
    assert _global_state() == before
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training
    assert torch.equal(pred.detach(), pred_copy) and torch.equal(target, target_copy)


def test_folding_draws_no_random_numbers(net):
    """BatchNorm is folded inside every forward: it must never touch the global RNG."""
    other = copy.deepcopy(net).float()
    target = smooth_images(1, 40, 40, seed=56)
    rng = torch.get_rng_state()
    with torch.no_grad():
        other(distort(target, 57), target)
    assert torch.equal(torch.get_rng_state(), rng)


def test_grad_mode_respected_inside_no_grad(loss_fn):
    target = smooth_images(1, 32, 32, seed=53)
    p = distort(target, 54).requires_grad_(True)
    with torch.no_grad():
        out = loss_fn(p, target)
    assert not out.requires_grad and torch.is_grad_enabled()


def test_four_threads_match_sequential(loss_fn):
    pairs = [(distort(t, 60 + i), t) for i, t in enumerate(smooth_images(4, 48, 48, seed=55).split(1))]
    want = []
    for p, t in pairs:
        x = p.clone().requires_grad_(True)
        loss = loss_fn(x, t)
        loss.backward()
        want.append((loss.detach(), x.grad))
    got: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(2):
                x = pairs[i][0].clone().requires_grad_(True)
                loss = loss_fn(x, pairs[i][1])
                loss.backward()
            got[i] = (loss.detach(), x.grad)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors
    for i in range(4):
        assert torch.allclose(got[i][0], want[i][0], atol=1e-6)
        assert torch.allclose(got[i][1], want[i][1], rtol=1e-4, atol=1e-8)
