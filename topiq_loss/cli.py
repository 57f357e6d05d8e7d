"""Command line: ``topiq-loss score|map|demo`` (see ``topiq-loss --help``).

``score``/``map`` with two images use TOPIQ-FR, with one image TOPIQ-NR; ``weights``
lists, fetches and verifies the official files. Errors print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import torch

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

from .hub import WeightsError
from .loss import TOPIQLoss
from .loss_nr import TOPIQNRLoss
from .maps import render_maps
from .weights import DEFAULT_NR_WEIGHTS, DEFAULT_WEIGHTS, NR_WEIGHTS, WEIGHTS, WeightsEntry

#: PIL modes of 8-bit channels, converted to RGB as they are.
_EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


def read_image(path: str | Path | BinaryIO) -> torch.Tensor:
    """An image file as a (1, 3, H, W) float32 tensor in [0, 1], decoded by its bit depth.

    8-bit images are divided by 255, 16-bit ones (PNG, TIFF) by 65535, float images
    (TIFF mode "F") are taken as they are; grey is repeated to RGB.

    Raises:
        ValueError: the file is not an image, is larger than PIL's decompression-bomb
            limit, or has a mode or values that cannot be read as [0, 1] intensities.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    name = getattr(path, "name", path)
    with warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that: refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                if mode in _EIGHT_BIT_MODES:
                    arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
                elif mode.startswith("I;16"):
                    arr = np.asarray(im, dtype=np.uint16).astype(np.float32) / 65535.0
                elif mode == "I":
                    raw = np.asarray(im, dtype=np.int64)
                    if raw.size and (raw.min() < 0 or raw.max() > 65535):
                        raise ValueError(f"{name}: 32-bit integer image with values outside 0..65535")
                    arr = raw.astype(np.float32) / 65535.0
                elif mode == "F":
                    arr = np.asarray(im, dtype=np.float32)
                    if not np.isfinite(arr).all():
                        raise ValueError(f"{name}: float image with NaN or inf values")
                else:
                    raise ValueError(f"{name}: unsupported image mode {mode!r}")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"{name}: refused as a possible decompression bomb ({exc})") from None
        except UnidentifiedImageError:
            raise ValueError(f"{name}: not an image file PIL can decode") from None
    t = torch.from_numpy(np.array(arr, dtype=np.float32))  # a writable copy
    t = t.unsqueeze(-1).expand(-1, -1, 3) if t.dim() == 2 else t
    return t.permute(2, 0, 1).unsqueeze(0).contiguous()


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}]; got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}]; got {value}")
        return value

    return parse


def to_pil(img: torch.Tensor) -> PILImage:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> PIL RGB image (clamped, rounded)."""
    from PIL import Image

    arr = img.detach().reshape(-1, *img.shape[-2:]).clamp(0, 1).mul(255).round().byte()
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy())


_DEFAULT = "default"


def _weights_arg(value: str) -> str | None:
    return None if value == "random" else value


def add_weights_option(parser: argparse.ArgumentParser, no_reference: bool = False) -> None:
    """``--weights NAME|PATH|random`` ("random" becomes ``weights=None``).

    With ``no_reference`` the option also lists the no-reference names and defaults
    to ``"default"``: kadid with a reference image, koniq without.
    """
    if no_reference:
        parser.add_argument(
            "--weights",
            default=_DEFAULT,
            type=_weights_arg,
            help=f"with REF (TOPIQ-FR): {' | '.join(WEIGHTS)}; without (TOPIQ-NR): "
            f"{' | '.join(NR_WEIGHTS)}; or PATH to a checkpoint | random (untrained, tests "
            f"only); default {DEFAULT_WEIGHTS} with REF, {DEFAULT_NR_WEIGHTS} without",
        )
        return
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        type=_weights_arg,
        help=f"TOPIQ-FR weights: {' | '.join(WEIGHTS)} | PATH to a checkpoint | random "
        f"(untrained, tests only); default {DEFAULT_WEIGHTS}",
    )


def add_nr_weights_option(parser: argparse.ArgumentParser) -> None:
    """``--weights koniq|spaq|flive|ava|PATH|random`` for no-reference tools."""
    parser.add_argument(
        "--weights",
        default=DEFAULT_NR_WEIGHTS,
        type=_weights_arg,
        help=f"TOPIQ-NR weights: {' | '.join(NR_WEIGHTS)} | PATH to a checkpoint | random "
        f"(untrained, tests only); default {DEFAULT_NR_WEIGHTS}",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topiq-loss", description="TOPIQ image quality (full- and no-reference).")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "score", help="print the TOPIQ-FR score of DIST against REF, or the TOPIQ-NR score of DIST alone"
    )
    s.add_argument("dist", help="distorted / restored image (PNG, JPEG)")
    s.add_argument("ref", nargs="?", help="reference image of the same size (omit for no-reference)")
    add_weights_option(s, no_reference=True)
    s.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    m = sub.add_parser(
        "map",
        help="write a PNG of where TOPIQ looks: gates and cross-scale attention per level "
        "(FR with REF, NR without)",
    )
    m.add_argument("dist", help="distorted / restored image")
    m.add_argument("ref", nargs="?", help="reference image of the same size (omit for no-reference)")
    m.add_argument("-o", "--output", required=True, help="output PNG path")
    add_weights_option(m, no_reference=True)
    m.add_argument("--device", default="cpu", help="torch device (default cpu)")
    m.add_argument("--panel", type=_int_in(16, 2048), default=256, help="panel size in pixels, 16-2048 (default 256)")
    d = sub.add_parser(
        "demo",
        help="score blur, noise and JPEG at three strengths on a real photograph "
        "(scikit-image's astronaut; needs the [examples] extra)",
    )
    add_weights_option(d)
    d.add_argument(
        "--size", type=_int_in(32, 512), default=256, help="crop size in pixels, 32-512 (the photo is 512 px; default 256)"
    )
    d.add_argument("--device", default="cpu", help="torch device (default cpu)")
    w = sub.add_parser("weights", help="list, fetch or verify the official weight files")
    wsub = w.add_subparsers(dest="action", required=True)
    wsub.add_parser("list", help="names, files, whether each is cached, and its pin")
    f = wsub.add_parser("fetch", help="download (or reuse) a file and print its full digest line")
    f.add_argument("name", help=f"one of {', '.join([*WEIGHTS, *NR_WEIGHTS])}")
    v = wsub.add_parser("verify", help="hash a cached or given file; print its sha256sum line; exit 2 if refused")
    v.add_argument("name", help="a registry name (its cached file) or a PATH")
    for q in (f, v, wsub.choices["list"]):
        q.add_argument("--cache-dir", default=None, help="weights cache (default torch.hub's checkpoints folder)")
    return p


def _weights_command(args: argparse.Namespace) -> int:
    from .hub import default_cache_dir, download_weights
    from .integrity import digest_problem, expected, sha256_file

    entries = {**WEIGHTS, **NR_WEIGHTS}
    folder = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.action == "list":
        print(f"{'name':<7}{'kind':<6}{'file':<40}{'cached':<8}check")
        for name, e in entries.items():
            kind = "FR" if name in WEIGHTS else "NR"
            path = folder / e.filename
            full, source, record = expected(e, path)
            check = f"pinned ({source})" if full else "recorded digest" if record else "name prefix only"
            print(f"{name:<7}{kind:<6}{e.filename:<40}{'yes' if path.is_file() else 'no':<8}{check}")
        print(f"cache: {folder}")
        return 0
    if args.action == "fetch":
        if args.name not in entries:
            raise ValueError(f"NAME must be one of {sorted(entries)}; got {args.name!r}")
        path = download_weights(entries[args.name], cache_dir=folder)
        print(f"{sha256_file(path)}  {path.name}")
        print(f"-> {path}")
        return 0
    entry: WeightsEntry | None
    if args.name in entries:
        entry = entries[args.name]
        path = folder / entry.filename
        if not path.is_file():
            raise ValueError(f"{args.name!r} is not cached at {path}: `topiq-loss weights fetch {args.name}`")
    else:
        path = Path(args.name)
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        entry = next((e for e in entries.values() if e.filename == path.name), None)
    digest = sha256_file(path)
    print(f"{digest}  {path.name}")
    if entry is None:
        print("not an official file name: nothing to compare with", file=sys.stderr)
        return 0
    problem = digest_problem(digest, entry, path)
    if problem is not None:
        print(f"topiq-loss: refused: {problem}", file=sys.stderr)
        return 2
    print(f"ok: accepted as {entry.name!r}", file=sys.stderr)
    return 0


def _demo_rows(ref: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    import io

    import kornia

    gen = torch.Generator().manual_seed(0)
    rows = []
    for sigma in (1.0, 2.0, 4.0):
        k = 2 * int(3 * sigma) + 1
        rows.append((f"gaussian blur, sigma {sigma:g}", kornia.filters.gaussian_blur2d(ref, (k, k), (sigma, sigma))))
    for std in (0.02, 0.05, 0.1):
        noisy = ref + std * torch.randn(ref.shape, generator=gen)
        rows.append((f"gaussian noise, std {std:g}", noisy.clamp(0, 1)))
    for q in (50, 20, 5):
        buf = io.BytesIO()
        to_pil(ref).save(buf, format="JPEG", quality=q)
        rows.append((f"JPEG, quality {q}", read_image(buf)))
    return rows


def demo(weights: str | None, size: int, device: str) -> None:
    """Print how TOPIQ-FR ranks common degradations of a real photograph."""
    try:
        from skimage import data
    except ImportError as exc:
        raise RuntimeError("the demo needs scikit-image: pip install 'topiq-loss[examples]'") from exc
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255)  # type: ignore[no-untyped-call]
    top = (photo.shape[1] - size) // 2
    ref = photo[None, :, top : top + size, top : top + size].contiguous()
    loss_fn = TOPIQLoss(weights=weights).to(device)
    print(f"TOPIQ-FR ({loss_fn.weights_name}) on a {size}x{size} crop of scikit-image's astronaut")
    print(f"{'degradation':<28}{'PSNR dB':>9}{'score':>9}{'loss':>9}")
    fixed = loss_fn.with_target(ref.to(device))  # one backbone pass for the reference
    with torch.no_grad():
        for name, img in _demo_rows(ref):
            mse = torch.mean((img - ref) ** 2).item()
            psnr = 10 * torch.log10(torch.tensor(1.0 / mse)).item()
            score = fixed.score(img.to(device)).item()
            print(f"{name:<28}{psnr:>9.2f}{score:>9.4f}{1 - score:>9.4f}")


def _no_reference(args: argparse.Namespace) -> int:
    img = read_image(args.dist)
    weights = DEFAULT_NR_WEIGHTS if args.weights == _DEFAULT else args.weights
    loss_fn = TOPIQNRLoss(weights=weights).to(args.device)
    if args.command == "map":
        maps = loss_fn.quality_maps(img.to(args.device))
        render_maps(img, None, maps, panel=args.panel).save(args.output, format="PNG")
        print(f"{maps.score.item():.6f} -> {args.output}")
        return 0
    with torch.no_grad():
        print(f"{loss_fn.score(img.to(args.device)).item():.6f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            demo(args.weights, args.size, args.device)
            return 0
        if args.command == "weights":
            return _weights_command(args)
        if args.ref is None:
            return _no_reference(args)
        dist, ref = read_image(args.dist), read_image(args.ref)
        if dist.shape != ref.shape:
            raise ValueError(
                f"DIST and REF must have the same size; got {tuple(dist.shape[-2:])} and "
                f"{tuple(ref.shape[-2:])}"
            )
        weights = DEFAULT_WEIGHTS if args.weights == _DEFAULT else args.weights
        loss_fn = TOPIQLoss(weights=weights).to(args.device)
        if args.command == "map":
            maps = loss_fn.quality_maps(dist.to(args.device), ref.to(args.device))
            render_maps(dist, ref, maps, panel=args.panel).save(args.output, format="PNG")
            print(f"{maps.score.item():.6f} -> {args.output}")
            return 0
        with torch.no_grad():
            score = loss_fn.score(dist.to(args.device), ref.to(args.device))
    except (OSError, RuntimeError, ValueError, TypeError, WeightsError) as exc:
        print(f"topiq-loss: error: {exc}", file=sys.stderr)
        return 2
    print(f"{score.item():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
