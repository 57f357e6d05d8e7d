"""Image files to and from (1, 3, H, W) tensors in [0, 1], for the command line.

Decoding follows the file's bit depth, applies the EXIF orientation and refuses what
is not one still picture (animations, multi-page files) or not safe to decode
(decompression bombs). Writing picks the format from the file name.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import torch

from .. import _compat

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "display_name", "file_errors", "image_files", "oriented_size", "read_image", "save_image", "to_pil", "writable_format",
]

#: PIL modes of 8-bit channels, converted to RGB as they are.
_EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_EXIF_ORIENTATION = 0x0112
_TIFF_BITS, _TIFF_SAMPLE_FORMAT = 258, 339
_SIGNED = 2  # TIFF SampleFormat: 1 unsigned (the default), 2 signed, 3 float


def _first(value: Any, default: int) -> int:
    if value is None:
        return default
    return int(value[0] if isinstance(value, tuple) else value)


def _int_scale(im: Any) -> tuple[bool, float]:
    """For PIL mode "I" (int32 storage): whether the values are unsigned 32-bit, and full scale.

    TIFFs say what their integers are: unsigned 32-bit ones are stored by PIL as int32
    and must be reinterpreted; signed 16/32-bit ones reach 2**(bits-1) - 1. Other
    formats widen 16-bit data to mode "I" (full scale 65535).
    """
    if im.format == "TIFF":
        bits = _first(im.tag_v2.get(_TIFF_BITS), 32)
        signed = _first(im.tag_v2.get(_TIFF_SAMPLE_FORMAT), 1) == _SIGNED
        if bits == 32 and not signed:
            return True, float(2**32 - 1)
        if signed and bits in (16, 32):
            return False, float(2 ** (bits - 1) - 1)
        raise ValueError(f"{bits}-bit {'signed' if signed else 'unsigned'} TIFF integers are not supported")
    return False, 65535.0


def _decode(im: Any) -> Any:
    """(H, W) or (H, W, C) float32 array in [0, 1] of a loaded PIL image, EXIF-oriented."""
    import numpy as np
    from PIL import ImageOps

    mode = im.mode
    if mode == "I":
        unsigned32, full = _int_scale(im)  # before the transpose drops the TIFF tags
    im = ImageOps.exif_transpose(im)
    if mode in _EIGHT_BIT_MODES:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    if mode.startswith("I;16"):
        return np.asarray(im, dtype=np.uint16).astype(np.float32) / 65535.0
    if mode == "I":
        raw = np.asarray(im, dtype=np.int32)
        raw = raw.view(np.uint32) if unsigned32 else raw
        if raw.size and (raw.min() < 0 or raw.max() > full):
            raise ValueError(f"integer image with values outside 0..{full:.0f}")
        return (raw.astype(np.float64) / full).astype(np.float32)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ValueError("float image with NaN or inf values")
        return arr
    raise ValueError(f"unsupported image mode {mode!r}")


def display_name(path: str | os.PathLike[str] | bytes) -> str:
    """``path`` as text every writer can encode: bytes that are not UTF-8 appear as ``\\xff``.

    A file name that is not valid UTF-8 reaches Python as lone surrogates, which a UTF-8
    file, a JSON parser or a terminal refuses; reports and messages show this text instead.
    """
    text = os.fsdecode(path)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that did not come from undecodable bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


@contextmanager
def file_errors(path: object) -> Iterator[None]:
    """Turn whatever reading the image file ``path`` raises into one ValueError that names it.

    Every decode of the command line goes through here (headers and pixels, single files
    and folder members alike), so no per-file failure reaches the user without the file's
    name: decompression bombs (refused even in PIL's warning band), files PIL cannot
    identify, truncated or corrupt data, missing files.
    """
    from PIL import Image, UnidentifiedImageError

    name = display_name(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    with warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that: refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except MemoryError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"{name}: refused as a possible decompression bomb ({exc})") from None
        except UnidentifiedImageError:
            raise ValueError(f"{name}: not an image file PIL can decode") from None
        except FileNotFoundError:
            raise ValueError(f"{name}: no such file") from None
        except OSError as exc:  # truncated data, permissions, a folder
            raise ValueError(f"{name}: cannot be read ({exc.strerror or exc})") from None
        except ValueError as exc:  # our own refusals (frames, modes, values)
            raise ValueError(f"{name}: {exc}") from None
        except Exception as exc:  # decoders also raise SyntaxError, EOFError, struct.error, ...
            raise ValueError(f"{name}: corrupt image data ({type(exc).__name__}: {exc})") from None


def read_image(path: str | Path | BinaryIO) -> torch.Tensor:
    """An image file as a (1, 3, H, W) float32 tensor in [0, 1], decoded by its bit depth.

    8-bit images are divided by 255, 16-bit ones (PNG, TIFF) by 65535, 32-bit unsigned
    integer TIFFs by 2**32 - 1 and signed 16/32-bit ones by 2**15 - 1 / 2**31 - 1
    (negative values refused); float images (TIFF mode "F") are taken as they are.
    Grey is repeated to RGB; the EXIF orientation is applied.

    Raises:
        ValueError: naming the file (see :func:`file_errors`): it is not an image, is
            truncated or corrupt, has more than one frame (an animated GIF/PNG/WebP or a
            multi-page TIFF), is larger than PIL's decompression-bomb limit, or has a mode
            or values that cannot be read as [0, 1] intensities.
    """
    import numpy as np
    from PIL import Image

    with file_errors(getattr(path, "name", path)), contextlib.ExitStack() as stack:
        # A path is opened here and PIL given the file object: from a file name PIL maps
        # raw single-strip data (grey and 16-bit TIFFs) into memory and then loses their
        # orientation (Pillow 11-13 turn them back sideways); from a file object it reads them.
        fp = stack.enter_context(open(path, "rb")) if isinstance(path, (str, os.PathLike)) else path
        with Image.open(fp) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise ValueError(
                    f"{frames} frames (animation or multi-page file); TOPIQ scores one "
                    "still image: save the frame you mean as its own PNG"
                )
            im.load()
            arr = _decode(im)
    t = torch.from_numpy(np.array(arr, dtype=np.float32))  # a writable, contiguous copy
    t = t.unsqueeze(-1).expand(-1, -1, 3) if t.dim() == 2 else t
    return t.permute(2, 0, 1).unsqueeze(0).contiguous()


def oriented_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image after its EXIF orientation, from the header only.

    Raises:
        ValueError: naming the file, as :func:`read_image` does.
    """
    from PIL import Image

    with file_errors(path), Image.open(path) as im:
        w, h = im.size
        if im.format == "TIFF":
            # Recent Pillow reports a TIFF's size already oriented; its tags hold the stored one.
            w, h = _first(im.tag_v2.get(256), w), _first(im.tag_v2.get(257), h)
        turned = im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    return (w, h) if turned else (h, w)


def image_files(folder: str | Path) -> list[Path]:
    """The files directly in ``folder`` with an extension PIL can read (any case), sorted.

    Hidden files (a leading dot) are skipped, and so are formats PIL only writes (``.pdf``,
    ``.palm``, ...): a ``plots.pdf`` beside the images is no image to score.
    """
    from PIL import Image

    known = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return sorted(
        p for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in known
    )


def to_pil(img: torch.Tensor) -> PILImage:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> PIL RGB image (clamped, rounded)."""
    from PIL import Image

    arr = img.detach().reshape(-1, *img.shape[-2:]).clamp(0, 1).mul(255).round().byte()
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy())


def writable_format(path: str | Path) -> str:
    """PIL's format name for the extension of ``path`` (any case): ``.png`` -> PNG, ``.jpg`` -> JPEG.

    Raises:
        ValueError: the name has no extension PIL can write.
    """
    from PIL import Image

    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"OUTPUT must end in an image extension PIL can write, e.g. .png or .jpg; got {str(path)!r}")
    return fmt


def save_image(img: PILImage, path: str | Path) -> None:
    """Write ``img`` in the format its file name says (``.png``, ``.jpg``/``.jpeg`` at quality 95, ...).

    Raises:
        ValueError: the name has no extension PIL can write.
    """
    fmt = writable_format(path)
    options = {"quality": 95} if fmt == "JPEG" else {}
    img.save(path, format=fmt, **options)


def __getattr__(name: str) -> object:
    # 0.4's names of this module (topiq_loss._compat.MOVED_NAMES), with a FutureWarning.
    return _compat.moved_name(__name__, name)
