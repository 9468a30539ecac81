"""Image files: which files count as images, and a robust RGB loader.

:func:`load_image` returns a fully loaded RGB ``PIL.Image.Image`` whatever the file
holds, or raises :class:`BadImageError` (a :class:`~croft.errors.CroftError`):

- **truncated** files are decoded as far as the data goes (the rest is filled by the
  decoder, grey for JPEG). The first attempt is strict; only when PIL reports a truncated
  file is ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` switched on, under a lock, for that one
  retry and restored afterwards. Pass ``allow_truncated=False`` to reject them instead.
- **CMYK**, **YCbCr**, **LAB**, **HSV**, **1-bit** and **L** are converted with PIL.
- **16-bit / 32-bit greyscale** (``I;16*``, ``I``, ``F``) are rescaled, not clipped:
  ``I;16`` by ``/257``; ``I`` by ``/257`` when its maximum exceeds 255; ``F`` by ``*255``
  when its maximum is at most 1, else clipped to ``[0, 255]``.
- **alpha** (``RGBA``, ``LA``, ``PA``, palette or ``L``/``RGB`` with a transparency key)
  is composited on **white**, so fully transparent pixels show white rather than
  whatever colour the file stores under them (often black).
- **multi-frame** files (GIF, TIFF) give their first frame; EXIF orientation is ignored,
  as torchvision's and Dassl's loaders do (``exif_transpose=True`` applies it).
- **huge** images (decompression bombs): an image whose header claims more pixels than
  the limit is refused before anything is decoded, also on the truncated-file retry.
  The limit is ``max_pixels=`` when given, else the environment variable
  ``CROFT_MAX_IMAGE_PIXELS`` (an integer; raise it for genuine giant images), else PIL's
  ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89 Mpx). PIL's own bomb check stays on.
- zero-byte, missing, non-image and undecodable files raise :class:`BadImageError`.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from croft.errors import CroftError
from croft.limits import LIMITS, check_limit, limit_value

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)

_TRUNCATED_LOCK = threading.Lock()
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


class BadImageError(CroftError):
    """An image file that cannot be decoded (empty, not an image, corrupt, too large)."""


def is_image_file(name: str) -> bool:
    """True for a visible file name with an image extension (case-insensitive)."""
    base = os.path.basename(name)
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursive), as sorted POSIX paths relative to it.

    Hidden files and folders (name starting with ``.``) are skipped.
    Walked without recursion (symlinked folders are not entered, as ``os.walk``); a folder
    nested deeper than the ``folder_depth`` limit is one :class:`CroftError` line.
    """
    found: list[str] = []
    stack: list[tuple[str, int]] = [("", 0)]
    bound = limit_value("folder_depth")
    while stack:
        rel, depth = stack.pop()
        if depth > bound:
            check_limit("folder_depth", depth, f"{folder}: folder {rel[:80]}... nesting depth")
        try:
            with os.scandir(os.path.join(folder, rel) if rel else folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.name.startswith(".") and not entry.is_symlink():
                    stack.append((name, depth + 1))
            elif is_image_file(entry.name):
                found.append(name)
    return sorted(found)


def _bad(path: Path, reason: str) -> BadImageError:
    return BadImageError(
        f"cannot read image {path}: {reason}; replace or delete the file (or drop it from "
        "the split file)"
    )


def _wide_grey_to_l(im: PILImage.Image) -> PILImage.Image:
    import numpy as np
    from PIL import Image

    arr = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16"):
        arr = arr / 257.0
    elif im.mode == "I":
        if arr.size and arr.max() > 255:
            arr = arr / 257.0
    elif arr.size and np.nanmax(arr) <= 1.0:  # "F"
        arr = arr * 255.0
    arr = np.nan_to_num(arr, nan=0.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(im: PILImage.Image) -> PILImage.Image:
    from PIL import Image

    mode = im.mode
    if mode in _WIDE_GREY_MODES:
        return _wide_grey_to_l(im).convert("RGB")
    has_alpha = mode in _ALPHA_MODES or "transparency" in im.info
    if not has_alpha:
        return im.convert("RGB")  # a copy even for RGB: the caller closes ``im``
    if mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    rgba = im.convert("RGBA")
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return out


def pixel_limit(max_pixels: int | None = None) -> int | None:
    """The pixel limit in force: ``max_pixels``, else ``$CROFT_MAX_IMAGE_PIXELS``, else
    PIL's ``MAX_IMAGE_PIXELS`` (None only if PIL's was switched off and nothing is set)."""
    from PIL import Image

    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get("CROFT_MAX_IMAGE_PIXELS", "").strip()
    if env:
        try:
            value = int(float(env))
            if value <= 0:
                raise ValueError(env)
            return value
        except (ValueError, OverflowError):
            raise CroftError(
                f"CROFT_MAX_IMAGE_PIXELS={env!r} is not a number; set it to a pixel count "
                "such as 200000000"
            ) from None
    return Image.MAX_IMAGE_PIXELS


def _open_loaded(path: Path, max_pixels: int | None) -> PILImage.Image:
    from PIL import Image

    limit = pixel_limit(max_pixels)
    with warnings.catch_warnings():
        if limit is not None and limit > (Image.MAX_IMAGE_PIXELS or 0):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # raised on purpose
        im = Image.open(path)
    try:
        w, h = im.size
        if limit is not None and w * h > limit:
            name = f"max_pixels={limit}" if max_pixels is not None else f"the limit of {limit}"
            raise _bad(
                path,
                f"{w}x{h} = {w * h} pixels exceeds {name} (a decompression "
                "bomb?); if the image is genuine, set CROFT_MAX_IMAGE_PIXELS higher",
            )
        im.load()
    except BaseException:
        im.close()
        raise
    return im


def load_image(
    path: str | os.PathLike[str],
    *,
    allow_truncated: bool = True,
    max_pixels: int | None = None,
    exif_transpose: bool = False,
) -> PILImage.Image:
    """Open ``path`` and return a fully loaded RGB image; see the module notes.

    Raises :class:`BadImageError` for missing, empty, non-image, corrupt or too large files.
    """
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    path = Path(path)
    max_pixels = pixel_limit(max_pixels)  # a malformed variable is the user's, not the file's
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _bad(path, "file not found") from None
    except OSError as exc:
        raise _bad(path, exc.strerror or str(exc)) from None
    if not path.is_file():
        raise _bad(path, "not a regular file")
    if size == 0:
        raise _bad(path, "the file is empty (0 bytes)")
    bound = limit_value("image_file_bytes")
    if size > bound:
        raise _bad(
            path,
            f"{size} bytes is above the limit {bound} (image file size); set "
            f"{LIMITS['image_file_bytes'].env} higher if this is genuine",
        )
    try:
        try:
            im = _open_loaded(path, max_pixels)
        except OSError as exc:
            if not (allow_truncated and "truncated" in str(exc).lower()):
                raise
            with _TRUNCATED_LOCK:
                previous = ImageFile.LOAD_TRUNCATED_IMAGES
                ImageFile.LOAD_TRUNCATED_IMAGES = True
                try:
                    im = _open_loaded(path, max_pixels)
                finally:
                    ImageFile.LOAD_TRUNCATED_IMAGES = previous
        try:
            oriented = ImageOps.exif_transpose(im) if exif_transpose else None
            rgb = _to_rgb(oriented or im)
            rgb.load()
        finally:
            im.close()
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise _bad(path, "not an image PIL can identify") from None
    except Image.DecompressionBombError as exc:
        raise _bad(
            path,
            f"too large ({exc}); if the image is genuine, set CROFT_MAX_IMAGE_PIXELS higher",
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise _bad(path, f"{type(exc).__name__}: {exc}") from None
    return rgb
