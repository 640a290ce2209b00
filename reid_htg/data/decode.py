"""Image decoding with Pillow and numpy only (no torch): what training, feature extraction and the ONNX service share."""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image


def to_rgb8(im: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``im``; 16-bit and 32-bit grayscale are scaled to 8 bits, not clipped.

    Pillow's ``convert("RGB")`` clips "I;16" / "I" pixels at 255, so a 16-bit
    PNG would become all white.
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and a.max() <= 65535) else max(float(a.max()), 1.0)
        if im.mode == "F":
            top = 1.0 if a.max() <= 1.0 else max(float(a.max()), 1.0)
        im = Image.fromarray(np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


MAX_PIXELS = 40_000_000  # larger images are refused before they are decoded (a 236 KB PNG can unpack to 240 MB)


def read_rgb(source, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file path or its bytes, resized to ``size`` = (H, W) (bilinear).

    Raises:
        OSError: naming the file (or "uploaded image") and Pillow's reason, or an image over :data:`MAX_PIXELS`
            (checked from its header, before decoding: a decompression bomb costs nothing).
    """
    name = "uploaded image" if isinstance(source, (bytes, bytearray)) else str(source)
    if os.path.isdir(str(source)) if not isinstance(source, (bytes, bytearray)) else False:
        raise OSError(f"cannot read image {name}: it is a folder, not an image file")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ValueError(f"{im.width} x {im.height} pixels is over the limit of {MAX_PIXELS:,}")
            im = to_rgb8(im).resize((size[1], size[0]), Image.BILINEAR)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        raise OSError(f"cannot read image {name}: {type(exc).__name__}: {exc}") from None
    return np.asarray(im).copy()
