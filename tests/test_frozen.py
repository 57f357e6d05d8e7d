"""The loss stays frozen: eval mode, no trainable state, out of the parent's checkpoints."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn as nn
from conftest import distort, smooth_images

from topiq_loss import TOPIQLoss


class Generator(nn.Module):
    def __init__(self, loss: TOPIQLoss) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 3, 3, padding=1)
        self.perceptual = loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@pytest.fixture()
def gen(net):
    return Generator(TOPIQLoss(net=net))


def _bn_stats(loss: TOPIQLoss) -> list[torch.Tensor]:
    return [b.clone() for n, b in loss.net.named_buffers() if "running" in n]


def test_train_mode_never_reaches_the_loss(gen):
    gen.train()
    assert gen.body.training and not gen.perceptual.training
    assert not any(m.training for m in gen.perceptual.net.modules())
    gen.perceptual.train(True)
    assert not gen.perceptual.training and not gen.perceptual.net.training


def test_training_step_moves_no_loss_state(gen):
    before = _bn_stats(gen.perceptual)
    # Every tensor of the network (they are buffers: parameters() is empty by construction).
    params_before = [p.clone() for p in gen.perceptual.net.state_dict().values()]
    assert params_before and list(gen.perceptual.net.parameters()) == []
    opt = torch.optim.AdamW(gen.parameters(), lr=1e-2)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in gen.body.parameters())
    gen.train()
    ref = smooth_images(2, 32, 32, seed=1)
    for _ in range(2):
        loss = gen.perceptual(gen(distort(ref, 2)), ref)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert gen.body.weight.grad is not None and gen.body.weight.grad.abs().sum() > 0
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_stats(gen.perceptual), strict=True))
    held = list(gen.perceptual.net.state_dict(keep_vars=True).values())
    assert all(torch.equal(a, b) for a, b in zip(params_before, held, strict=True))
    assert all(p.grad is None and not p.requires_grad for p in held)


def test_state_dict_excludes_network_and_strict_load_works(gen, net):
    sd = gen.state_dict()
    assert sorted(sd) == ["body.bias", "body.weight"]
    fresh = Generator(TOPIQLoss(net=net))
    fresh.load_state_dict(sd, strict=True)
    # and a checkpoint saved without the loss loads into a model holding it
    plain = nn.Module()
    plain.body = nn.Conv2d(3, 3, 3, padding=1)
    fresh.load_state_dict(plain.state_dict(), strict=True)


def test_keep_in_state_dict_restores_plain_module_behaviour(net):
    gen = Generator(TOPIQLoss(net=copy.deepcopy(net), keep_in_state_dict=True))
    sd = gen.state_dict()
    assert "perceptual._net.h_emb" in sd and len(sd) == 2 + len(net.state_dict())
    assert all(not p.requires_grad for p in gen.perceptual.parameters())
    gen.train()
    assert not gen.perceptual.training and not gen.perceptual.net.training


@pytest.mark.parametrize("keep", [False, True])
def test_to_deepcopy_pickle(net, keep):
    gen = Generator(TOPIQLoss(net=copy.deepcopy(net), keep_in_state_dict=keep))
    ref = smooth_images(1, 32, 32, seed=3)
    dist = distort(ref, 4)
    with torch.no_grad():
        want = gen.perceptual(dist, ref)
        for other in (copy.deepcopy(gen), pickle.loads(pickle.dumps(gen))):
            assert other.perceptual.net is not gen.perceptual.net
            assert torch.equal(other.perceptual(dist, ref), want)
        gen.double()
        assert gen.perceptual.net.h_emb.dtype == torch.float64
        assert gen.perceptual.net.mean.dtype == torch.float64
        got = gen.perceptual(dist.double(), ref.double())
        assert got.dtype == torch.float64 and torch.allclose(got.float(), want, atol=1e-5)
        gen.to(torch.float32)
        assert gen.perceptual.net.h_emb.dtype == torch.float32


def test_ddp_wrapping_of_parent(net, tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not available in this build")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        gen = Generator(TOPIQLoss(net=net))
        ddp = nn.parallel.DistributedDataParallel(gen)
        ref = smooth_images(1, 32, 32, seed=5)
        loss = gen.perceptual(ddp(distort(ref, 6)), ref)
        loss.backward()
        assert gen.body.weight.grad is not None
        assert all(p.grad is None for p in net.state_dict(keep_vars=True).values())
    finally:
        dist.destroy_process_group()
