"""Input validation: every user error becomes one clear ValueError/TypeError."""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, cast

import torch

_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def eager(fn: _Fn) -> _Fn:
    """``fn`` always runs eagerly (checks that need a host sync, and anything that must
    not be traced), with its type kept.

    Not ``torch.compiler.disable(fn)`` at import: that imports ``torch._dynamo``, about
    a third of what ``import topiq_loss`` cost. Outside compilation ``fn`` is simply
    called; a traced call goes through ``torch.compiler.disable(fn)``, made at the first
    such call (dynamo is loaded by then), so the graph breaks there and ``fn`` runs
    eagerly, as before.
    """
    disabled: list[Callable[..., Any]] = []

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(fn))  # type: ignore[no-untyped-call]
        return disabled[0](*args, **kwargs)

    # Each checked function's wrapper runs code of its own. Dynamo compiles the wrapper's
    # frame at the graph break and keeps compiled frames, and counts recompiles against
    # its limit (8), per code object: with one code shared by every check, each new
    # check (a guard on `fn`) recompiled it, and an NR loss and an SRLoss compiled in one
    # process ran out. Now each wrapper compiles once or twice, whatever else is compiled.
    wrapper.__code__ = wrapper.__code__.replace(co_name=f"eager_{fn.__name__}")  # type: ignore[attr-defined]
    return cast(_Fn, wrapper)


MIN_SIZE = 32
# float8 and other exotic floats are floating point too, but no network op takes them.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = ("mean", "sum", "none")


def check_layout(x: torch.Tensor, name: str) -> torch.Tensor:
    """A dense (strided) tensor: sparse, mkldnn and other layouts reach no network op."""
    if x.layout != torch.strided:
        raise TypeError(
            f"`{name}` must be a dense (strided) tensor; got layout {x.layout}: convert it "
            f"with `.to_dense()` first"
        )
    return x


def _check_one(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor; got {type(x).__name__}")
    check_layout(x, name)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"`{name}` must be a floating-point tensor (float16, bfloat16, float32 or "
            f"float64) of RGB values; got dtype {x.dtype}"
        )
    if x.dim() != 4:
        raise ValueError(
            f"`{name}` must have shape (N, C, H, W) with C in (1, 3); got {tuple(x.shape)} "
            f"({x.dim()}-D)"
        )
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(
            f"`{name}` must have 1 (grey) or 3 (RGB) channels in dim 1; got shape {tuple(x.shape)}"
        )
    if n == 0:
        raise ValueError(f"`{name}` is an empty batch; got shape {tuple(x.shape)}")
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(
            f"`{name}` must be at least {MIN_SIZE}x{MIN_SIZE} pixels (H, W >= {MIN_SIZE}); "
            f"got shape {tuple(x.shape)}"
        )
    return x


def check_finite(x: torch.Tensor, name: str) -> tuple[float, float]:
    """Refuse NaN/inf; returns (min, max), found in the same single pass (NaN and inf
    show in the extremes)."""
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        nan = int(torch.isnan(x).sum())
        inf = int(torch.isinf(x).sum())
        raise ValueError(f"`{name}` must be finite; got {nan} NaN and {inf} inf values")
    return lo, hi


def check_pair(
    pred: object,
    target: object,
    device: torch.device | None = None,
    pred_name: str = "pred",
    target_name: str = "target",
    input_range: tuple[float, float] = (0.0, 1.0),
    owner: object | None = None,
    values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (prediction, target) image pair; returns them unchanged.

    With ``values=False`` only what needs no host sync is checked (type, dtype,
    shape, device); :func:`check_values` then reads the values once per call.

    ``device``, when given, is where the network lives; the images must be there.
    With an ``owner`` (the network), values far outside ``input_range`` warn once
    per owner (see :func:`_range_warning`).

    Raises:
        TypeError: not a tensor, or not floating point.
        ValueError: wrong rank, channels, size, empty batch, shape or device mismatch,
            NaN or inf values.
    """
    p = _check_one(pred, pred_name)
    t = _check_one(target, target_name)
    if p.shape != t.shape:
        raise ValueError(
            f"`{pred_name}` and `{target_name}` must have the same shape; got "
            f"{tuple(p.shape)} and {tuple(t.shape)}"
        )
    if p.device != t.device:
        raise ValueError(
            f"`{pred_name}` and `{target_name}` must be on the same device; got "
            f"{p.device} and {t.device}"
        )
    if device is not None:
        check_device(p, device, pred_name)
    if values:
        check_values([(p, pred_name), (t, target_name)], input_range=input_range, owner=owner)
    return p, t


def check_image(
    x: object,
    name: str,
    device: torch.device | None = None,
    input_range: tuple[float, float] = (0.0, 1.0),
    owner: object | None = None,
    values: bool = True,
) -> torch.Tensor:
    """Validate one image batch (type, dtype, shape, size, device and, with ``values``,
    finite); returns it."""
    t = _check_one(x, name)
    if device is not None:
        check_device(t, device, name)
    if values:
        check_values([(t, name)], input_range=input_range, owner=owner)
    return t


def read_host(t: torch.Tensor) -> list[float]:
    """``t.tolist()``: every value check's device-to-host read goes through here (counted
    by tests/test_host_syncs.py)."""
    return cast(list[float], t.tolist())


@eager
def check_values(
    images: Sequence[tuple[torch.Tensor, str]],
    score: torch.Tensor | None = None,
    score_names: str = "",
    input_range: tuple[float, float] = (0.0, 1.0),
    owner: object | None = None,
    what: str = "TOPIQ score",
) -> None:
    """Every value check of one call, read with a single host sync.

    Images with NaN or inf are refused (naming them, inputs first); a non-finite
    ``score`` (an overflow inside the network) is refused; values far outside
    ``input_range`` warn once per ``owner``. The reductions are queued on the device
    and read together, so a GPU training step stalls once, not once per check.
    """
    for x, name in images:
        if x.is_meta:
            raise ValueError(f"`{name}` is on the meta device (a tensor without values); got shape {tuple(x.shape)}")
    parts = [torch.stack(torch.aminmax(x.detach().reshape(-1))).to(torch.float64) for x, _ in images]
    if score is not None:
        parts.append(torch.isfinite(score.detach()).all().to(torch.float64).reshape(1))
    read = read_host(torch.cat(parts))  # the one host sync
    extremes = [(read[2 * i], read[2 * i + 1]) for i in range(len(images))]
    for (x, name), (lo, hi) in zip(images, extremes, strict=True):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            check_finite(x, name)  # counts the bad values (error path only)
    if score is not None and read[-1] == 0:
        raise ValueError(
            f"{score_names} gave a non-finite {what} ({score.detach().flatten()[:4].tolist()}): "
            f"the values overflow inside the network; check their scale"
        )
    if owner is not None:
        for (_, name), ext in zip(images, extremes, strict=True):
            _range_warning(ext, name, input_range, owner)


def check_device(x: torch.Tensor, device: torch.device, name: str = "pred") -> None:
    """The network's parameters must live where the images are."""
    if x.device != device:
        raise ValueError(
            f"`{name}` is on {x.device} but the TOPIQ network is on {device}; move one of "
            f"them (e.g. `loss_fn.to({str(x.device)!r})`)"
        )


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """``value`` must be one of ``choices`` (an enum-like string option called ``name``)."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}; got {value!r}")
    return str(value)


def check_reduction(reduction: object) -> Literal["mean", "sum", "none"]:
    return cast(Literal["mean", "sum", "none"], check_choice(reduction, "reduction", REDUCTIONS))


def check_non_negative(value: object, name: str) -> float:
    """A finite real number >= 0 (a term weight); bools, NaN and inf are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"`{name}` must be a finite real number >= 0; got {value!r}")
    return float(value)


def check_input_range(input_range: object, name: str = "input_range") -> tuple[float, float]:
    """(low, high) with finite low < high."""
    if (
        not isinstance(input_range, Sequence)
        or len(input_range) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in input_range)
        or not all(math.isfinite(v) for v in input_range)
        or not input_range[1] > input_range[0]
    ):
        raise ValueError(
            f"`{name}` must be (low, high) of finite numbers with high > low, e.g. (0, 1) or "
            f"(-1, 1); got {input_range!r}"
        )
    return float(input_range[0]), float(input_range[1])


def check_loss_weight(loss_weight: object) -> float:
    if isinstance(loss_weight, bool) or not isinstance(loss_weight, (int, float)):
        raise TypeError(f"`loss_weight` must be a real number; got {type(loss_weight).__name__}")
    if not math.isfinite(loss_weight):
        raise ValueError(f"`loss_weight` must be finite; got {loss_weight!r}")
    return float(loss_weight)


def check_bool(value: object, name: str) -> bool:
    """A real bool (``"no"`` or 0/1 are refused: a truthy string would silently mean True)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False; got {value!r} ({type(value).__name__})")
    return value


def check_optional_bool(value: object, name: str) -> bool | None:
    return None if value is None else check_bool(value, name)


# Losses (or, through the functional API, networks) that have warned about the input range.
_range_warned: weakref.WeakSet[object] = weakref.WeakSet()


def _range_warning(
    extremes: tuple[float, float], name: str, input_range: tuple[float, float], owner: object
) -> None:
    """Warn (once per ``owner``) when values lie far outside ``input_range``.

    "Far" is more than half the range beyond either end: network outputs that
    overshoot a little pass silently; 0..255 images, or [-1, 1] images given to a
    (0, 1) loss, do not.
    """
    lo, hi = extremes
    low, high = input_range
    margin = 0.5 * (high - low)
    if (lo >= low - margin and hi <= high + margin) or owner in _range_warned:
        return
    _range_warned.add(owner)
    if hi > 2.0 * high + 1:
        hint = "images in 0..255? divide them by 255"
    elif lo < low - margin and (low, high) == (0.0, 1.0):
        hint = "images in [-1, 1]? pass input_range=(-1, 1)"
    else:
        hint = "check the data's scaling"
    warnings.warn(
        f"`{name}` has values in [{lo:.4g}, {hi:.4g}], far outside input_range={input_range}: "
        f"{hint}. The score of such inputs is meaningless. (Warned once per loss.)",
        UserWarning,
        stacklevel=_user_stacklevel(),
    )


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside topiq_loss and torch: the user's line."""
    inside = (os.path.dirname(__file__), os.path.dirname(torch.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def check_resize(resize: object, auto: bool = False) -> Any:
    """``resize`` (a short side in pixels): None, an int >= :data:`MIN_SIZE`, or with
    ``auto`` also ``"auto"``; anything else raises ``ValueError`` naming it."""
    if resize is None or (auto and isinstance(resize, str) and resize == "auto"):
        return resize
    if isinstance(resize, bool) or not isinstance(resize, int) or resize < MIN_SIZE:
        allowed = "None, 'auto' or an int" if auto else "None or an int"
        raise ValueError(f"`resize` must be {allowed} >= {MIN_SIZE} (short side in pixels); got {resize!r}")
    return resize
