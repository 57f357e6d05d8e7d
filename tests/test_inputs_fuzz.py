"""Fuzzed inputs: a correct score or the module's own ValueError/TypeError, nothing else."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from topiq_loss import topiq_fr

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool, torch.complex64]


def _make(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    if dtype == torch.bool:
        return x > 0.5
    if dtype.is_complex:
        return x.to(dtype)
    if not dtype.is_floating_point:
        return (x * 255).to(dtype)
    return x.to(dtype)


@given(
    rank=st.integers(0, 6),
    dims=st.lists(st.integers(0, 40), min_size=6, max_size=6),
    dtype=st.sampled_from(DTYPES),
    other_dtype=st.sampled_from(DTYPES),
    poison=st.sampled_from([None, "nan", "inf", "-inf"]),
    same_shape=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_arbitrary_inputs_raise_only_our_errors(net, rank, dims, dtype, other_dtype, poison, same_shape, seed):
    shape = tuple(dims[:rank])
    pred = _make(shape, dtype, seed)
    target = _make(shape if same_shape else tuple(dims[rank - 1 :: -1][:rank]), other_dtype, seed + 1)
    if poison and pred.is_floating_point() and pred.numel():
        pred = pred.clone()
        pred.view(-1)[seed % pred.numel()] = float(poison)
    try:
        with torch.no_grad():
            s = topiq_fr(pred, target, net=net)
    except (ValueError, TypeError) as exc:
        assert str(exc).startswith("`"), f"not one of ours: {exc!r}"
        return
    # Accepted: it must be a valid input, and the score finite.
    assert pred.dim() == 4 and pred.shape[1] in (1, 3) and min(pred.shape[2:]) >= 32
    assert torch.isfinite(s).all() and s.shape == (pred.shape[0],)


@given(
    layout=st.sampled_from(["transposed", "channels_last", "expanded", "sliced", "float64", "grey_expanded"]),
    grad=st.sampled_from([(False, False), (True, False), (False, True), (True, True)]),
    seed=st.integers(0, 1000),
)
def test_layouts_and_grad_flags_give_the_contiguous_fp32_score(net, layout, grad, seed):
    g = torch.Generator().manual_seed(seed)
    base_p = torch.rand(2, 3, 40, 36, generator=g)
    base_t = torch.rand(2, 3, 40, 36, generator=g)
    with torch.no_grad():
        want = topiq_fr(base_p, base_t, net=net)

    def view(x):
        if layout == "transposed":
            return x.transpose(2, 3).contiguous().transpose(2, 3)
        if layout == "channels_last":
            return x.contiguous(memory_format=torch.channels_last)
        if layout == "sliced":
            big = torch.zeros(2, 3, 80, 72)
            big[:, :, ::2, ::2] = x
            return big[:, :, ::2, ::2]
        if layout == "float64":
            return x.double()
        return x  # expanded forms below

    if layout == "expanded":
        p, t = base_p[:1].expand(2, -1, -1, -1), base_t[:1].expand(2, -1, -1, -1)
        with torch.no_grad():
            want = topiq_fr(base_p[:1], base_t[:1], net=net).expand(2)
    elif layout == "grey_expanded":
        p, t = base_p[:, :1].expand(-1, 3, -1, -1), base_t[:, :1].expand(-1, 3, -1, -1)
        with torch.no_grad():
            want = topiq_fr(base_p[:, :1], base_t[:, :1], net=net)
    else:
        p, t = view(base_p), view(base_t)
    p = p.detach().requires_grad_(grad[0])
    t = t.detach().requires_grad_(grad[1])
    s = topiq_fr(p, t, net=net)
    assert torch.allclose(s.detach(), want, atol=1e-5)
    if grad[0] or grad[1]:
        s.sum().backward()
        for x, flag in zip((p, t), grad, strict=True):
            assert (x.grad is not None and torch.isfinite(x.grad).all()) if flag else x.grad is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_input_to_cpu_network_is_our_error(net):
    x = torch.rand(1, 3, 32, 32, device="cuda")
    with pytest.raises(ValueError, match="TOPIQ network is on cpu"):
        topiq_fr(x, x, net=net)
