"""Swin-B feature extractor: the semantic model of TOPIQ's Swin checkpoints.

The module tree and its ``state_dict()`` keys are those of the original Swin
Transformer layout the official files were saved from (``patch_embed``,
``layers.<i>.blocks.<j>`` with ``attn.relative_position_index`` and, in shifted
blocks, ``attn_mask``; ``layers.<i>.downsample`` at the end of stages 0-2; the final
``norm`` and the ImageNet ``head``, which the feature path never uses but strict loading
needs). The pieces are torchvision's: its ``PatchMerging`` and, on the reference path,
its functional ``shifted_window_attention``. The default (fused) path runs the same
maths over the same tensors with ``F.scaled_dot_product_attention``.

Shape: the input is ImageNet-normalised (N, 3, 384, 384); the output is four maps of
:data:`SWIN_CHANNELS` channels at 1/8, 1/16, 1/32 and 1/32 of it (48, 24, 12, 12).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp

from .._errors import WeightsError

__all__ = ["SWIN_CHANNELS", "SWIN_INPUT_SIZE", "SwinFeatures", "relative_position_index", "shift_mask"]

#: Channels of the four feature levels (the output of each stage, after its downsample).
SWIN_CHANNELS: tuple[int, ...] = (256, 512, 1024, 1024)
#: The input size the Swin checkpoints were trained and evaluated at; the network
#: resizes every image to it (antialiased), as the reference does.
SWIN_INPUT_SIZE: tuple[int, int] = (384, 384)
#: The additive logit of a masked pair in shifted windows (the original Swin's value).
_MASKED = -100.0
_HALF = (torch.float16, torch.bfloat16)
_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def relative_position_index(window: int) -> torch.Tensor:
    """(L, L) int64, L = window**2: the row of the bias table for each query/key pair of
    a window (relative offsets in each axis shifted to >= 0, row-major over a
    (2w - 1) x (2w - 1) table)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, L)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, L, L), >= 0
    return rel[0] * (2 * window - 1) + rel[1]


def shift_mask(grid: int, window: int, shift: int) -> torch.Tensor:
    """(nW, L, L) float32: 0 where a query and a key of a shifted window come from the
    same region of the unshifted map, :data:`_MASKED` where the cyclic shift made them
    neighbours; windows in row-major order over a ``grid`` x ``grid`` map."""
    region = torch.zeros(grid, grid)
    cuts = (slice(0, grid - window), slice(grid - window, grid - shift), slice(grid - shift, grid))
    label = 0
    for rows in cuts:
        for cols in cuts:
            region[rows, cols] = label
            label += 1
    n = grid // window
    windows = region.view(n, window, n, window).permute(0, 2, 1, 3).reshape(n * n, window * window)
    differ = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(differ.shape).masked_fill_(differ, _MASKED)


class LayerNorm32(nn.LayerNorm):
    """``nn.LayerNorm`` that normalises half-precision input in float32 (under autocast
    with the backbone in half precision too); the output keeps the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in _HALF:
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            w = None if self.weight is None else self.weight.float()
            b = None if self.bias is None else self.bias.float()
            return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows, with a learned relative position bias.

    Tensors under the original names: ``qkv``, ``proj``, ``relative_position_bias_table``
    ((2w - 1)^2, heads) and the ``relative_position_index`` buffer (L, L) int64.
    """

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_load_state_dict_pre_hook(_check_loaded_buffer)  # type: ignore[no-untyped-call]

    def position_bias(self) -> torch.Tensor:
        """(heads, L, L): the bias added to each head's logits."""
        length = self.window**2
        table = self.relative_position_bias_table
        return table[self.relative_position_index.reshape(-1)].view(length, length, -1).permute(2, 0, 1)


def _check_loaded_buffer(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, *args: object) -> None:
    """Load pre-hook: a loaded ``relative_position_index`` / ``attn_mask`` must be exactly
    the one the module computes (they are not learned; another one would silently
    change what the network computes)."""
    if isinstance(module, WindowAttention):
        name, want = "relative_position_index", relative_position_index(module.window)
        kind = f"the relative position index of a {module.window}x{module.window} window"
        dtype_ok: tuple[torch.dtype, ...] = (torch.int64, torch.int32)
    elif isinstance(module, SwinBlock):
        name, want = "attn_mask", shift_mask(module.grid, module.window, module.shift)
        kind = f"the shift mask of a {module.grid}x{module.grid} map ({module.window}-wide windows, shift {module.shift})"
        dtype_ok = _FLOAT
    else:
        return
    key = prefix + name
    got = state.get(key)
    if not isinstance(got, torch.Tensor):
        return  # missing: strict loading reports it
    if got.dtype not in dtype_ok or got.shape != want.shape or not torch.equal(got.to(want.dtype), want):
        raise WeightsError(
            f"tensor {key!r} ({got.dtype}, shape {tuple(got.shape)}) is not {kind}, which this network "
            f"computes ({want.dtype}, shape {tuple(want.shape)}): it cannot be loaded"
        )


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.fc2(F.gelu(self.fc1(x))))


class SwinBlock(nn.Module):
    """Pre-norm block: (shifted) window attention, then the MLP, each with a residual.

    A shifted block (``shift > 0``) holds its region mask as the ``attn_mask`` buffer
    (:func:`shift_mask` of its ``grid``), as the original layout does.

    Shape: (N, H, W, C) -> (N, H, W, C) (channels last).
    """

    attn_mask: torch.Tensor | None

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, grid: int) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.grid = grid
        self.fused = True
        self.norm1 = LayerNorm32(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = LayerNorm32(dim)
        self.mlp = _Mlp(dim, 4 * dim)
        if shift:
            self.register_buffer("attn_mask", shift_mask(grid, window, shift))
            self.register_load_state_dict_pre_hook(_check_loaded_buffer)  # type: ignore[no-untyped-call]
        else:
            self.attn_mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        y = self.norm1(x)
        tiled = h % self.window == 0 and w % self.window == 0
        mask_fits = self.attn_mask is None or self.attn_mask.shape[0] == (h // self.window) * (w // self.window)
        if self.fused and tiled and mask_fits:
            y = self._attention(y)
        else:
            y = self._reference_attention(y)
        x = x + y
        return cast(torch.Tensor, x + self.mlp(self.norm2(x)))

    def _reference_attention(self, y: torch.Tensor) -> torch.Tensor:
        from torchvision.models.swin_transformer import shifted_window_attention

        attn = self.attn
        return cast(torch.Tensor, shifted_window_attention(
            y, attn.qkv.weight, attn.proj.weight, attn.position_bias().unsqueeze(0), [self.window] * 2,
            attn.num_heads, [self.shift] * 2, qkv_bias=attn.qkv.bias, proj_bias=attn.proj.bias, training=False,
        ))

    def _attention(self, y: torch.Tensor) -> torch.Tensor:
        """Window attention by ``scaled_dot_product_attention``: the same logits
        (scaled ``q k^T`` + position bias + shift mask) as the reference.

        The CPU kernel is fast with a bias broadcast over the windows and 3-6x slower
        with one bias per window (measured), and the shift mask is zero in every window
        but those of the last row and column, which share three masks (the row's, the
        column's, the corner's). So a shifted map is split into those four regions
        (``split``/``cat``, whose backward is a ``cat``/``split``: no zero-filled
        full-size gradients as indexing would make), each attended with one broadcast
        bias.
        """
        ws, s = self.window, self.shift
        bias = self.attn.position_bias().to(y.dtype)
        if not s:
            return self._windows(y, bias)
        h, w = y.shape[1], y.shape[2]
        mask = self.attn_mask
        assert mask is not None  # a shifted block holds its mask (see __init__)
        # The official -100 becomes -inf: a masked pair's weight e^-100 (relative) is a
        # float32 denormal, lost when added to a sum >= 1, so the result is the same; but
        # the kernel's backward recomputes those weights, and denormal arithmetic made the
        # masked groups 3x slower than the unmasked windows (measured on CPU).
        m = mask.to(y.dtype).view(h // ws, w // ws, ws * ws, ws * ws)
        m = m.masked_fill(m != 0, float("-inf"))
        y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        top, bottom = y.split([h - ws, ws], dim=1)  # type: ignore[no-untyped-call]
        inner, right = top.split([w - ws, ws], dim=2)
        low, corner = bottom.split([w - ws, ws], dim=2)
        out = torch.cat(
            [
                torch.cat([self._windows(inner, bias), self._windows(right, bias + m[0, -1])], dim=2),
                torch.cat([self._windows(low, bias + m[-1, 0]), self._windows(corner, bias + m[-1, -1])], dim=2),
            ],
            dim=1,
        )
        return torch.roll(out, shifts=(s, s), dims=(1, 2))

    def _windows(self, y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Attention within the windows of ``y`` (N, h, w, C), h and w multiples of the
        window, with ``bias`` (heads, L, L) added to every window's logits."""
        attn, ws = self.attn, self.window
        n, h, w, c = y.shape
        rows, cols = h // ws, w // ws
        win = y.reshape(n, rows, ws, cols, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        qkv = F.linear(win, attn.qkv.weight, attn.qkv.bias).view(win.shape[0], ws * ws, 3, attn.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))
        out = F.linear(out.transpose(1, 2).reshape(-1, ws * ws, c), attn.proj.weight, attn.proj.bias)
        return out.view(n, rows, cols, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)


class SwinStage(nn.Module):
    """``depth`` blocks (every second one shifted where the map is wider than a window),
    then the optional patch merging (torchvision's ``PatchMerging``: 2x2 -> 1, C -> 2C)."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, grid: int, downsample: bool) -> None:
        super().__init__()
        from torchvision.models.swin_transformer import PatchMerging

        shift = window // 2 if grid > window else 0
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, shift if j % 2 else 0, grid) for j in range(depth)
        )
        self.downsample = PatchMerging(dim, norm_layer=LayerNorm32) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.norm = LayerNorm32(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.norm(self.proj(x).permute(0, 2, 3, 1)))


class SwinFeatures(nn.Module):
    """Swin-B (window 12, 384 px) returning the output of each of its four stages.

    Parameter and buffer names match the ``semantic_model.*`` keys of the official
    TOPIQ Swin checkpoints (``../shared/reference/*_swin_state_dict_keys.txt``); those
    files' ``relative_position_index`` and ``attn_mask`` buffers are what this module
    computes (:meth:`check_buffers`).

    Settings (timm style): :meth:`set_grad_checkpointing` (per stage) and
    :meth:`set_fused` (``F.scaled_dot_product_attention``, default; off runs
    torchvision's ``shifted_window_attention``).

    Shape:
        - Input: (N, 3, 384, 384), ImageNet-normalised (:attr:`input_size`; the CFANet
          trunk resizes to it).
        - Output: list of 4 tensors (N, C_i, h_i, w_i), channels :data:`SWIN_CHANNELS`,
          grids 48, 24, 12, 12.
    """

    channels: tuple[int, ...] = SWIN_CHANNELS
    input_size: tuple[int, int] | None = SWIN_INPUT_SIZE

    def __init__(
        self,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window: int = 12,
        img_size: int = 384,
        patch: int = 4,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        last = len(depths) - 1
        self.patch_embed = _PatchEmbed(embed_dim, patch)
        grid = img_size // patch
        stages = []
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            stages.append(SwinStage(embed_dim * 2**i, depth, heads, window, grid // 2**i, downsample=i < last))
        self.layers = nn.ModuleList(stages)
        width = embed_dim * 2**last
        self.norm = LayerNorm32(width)
        self.head = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.channels = tuple(embed_dim * 2 ** min(i + 1, last) for i in range(last + 1))
        self.input_size = (img_size, img_size)
        self.grad_checkpointing = False
        self.fuse = True

    def set_grad_checkpointing(self, enable: bool = True) -> SwinFeatures:
        """Recompute each stage's activations in backward instead of storing them
        (non-reentrant checkpointing; same values and gradients); returns ``self``."""
        self.grad_checkpointing = bool(enable)
        return self

    def set_fused(self, enabled: bool = True) -> SwinFeatures:
        """``scaled_dot_product_attention`` (default) or torchvision's reference
        ``shifted_window_attention`` for the window attention; returns ``self``."""
        self.fuse = bool(enabled)
        for m in self.modules():
            if isinstance(m, SwinBlock):
                m.fused = self.fuse
        return self

    @property
    def fused_enabled(self) -> bool:
        """Whether the window attention runs through ``scaled_dot_product_attention``."""
        return self.fuse

    def expected_buffers(self) -> dict[str, torch.Tensor]:
        """The non-learned buffers (``relative_position_index``, ``attn_mask``) by key, as
        this network computes them: what a checkpoint's copies must equal."""
        out: dict[str, torch.Tensor] = {}
        for name, m in self.named_modules():
            prefix = f"{name}." if name else ""
            if isinstance(m, WindowAttention):
                out[f"{prefix}relative_position_index"] = relative_position_index(m.window)
            elif isinstance(m, SwinBlock) and m.attn_mask is not None:
                out[f"{prefix}attn_mask"] = shift_mask(m.grid, m.window, m.shift)
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of ``x`` (N, 3, 384, 384) at four levels, (N, C, h, w) each."""
        x = self.patch_embed(x)
        use_cp = self.grad_checkpointing and torch.is_grad_enabled() and x.requires_grad
        feats = []
        for stage in self.layers:
            x = cp.checkpoint(stage, x, use_reentrant=False) if use_cp else stage(x)
            feats.append(x.permute(0, 3, 1, 2))
        return feats
