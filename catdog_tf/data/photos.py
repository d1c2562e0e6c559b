"""One photo file: checked by a full decode (or the reason it cannot be stored), and the JPEG
bytes the records keep for it (its own bytes, or a re-encoding the way a browser shows it)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from catdog_tf import files
from catdog_tf.config import MAX_PIXELS
from catdog_tf.data import kaggle, sources
from catdog_tf.data.sources import Candidate, RecordsError

# Our own pixel limit (BuildConfig.max_pixels) is checked before any decode; Pillow's would
# refuse some photos that limit allows, with a less clear message.
Image.MAX_IMAGE_PIXELS = None

JPEG_MAX_SIDE = 65_500  # the JPEG format's limit (libjpeg refuses more)


@dataclasses.dataclass
class Checked:
    """A file that decoded; `convert` says why it must be re-encoded (None: keep bytes)."""

    id: str
    label: int
    origin: str
    read: Callable[[], bytes]
    height: int
    width: int
    convert: str | None = None
    digest: str = ""  # sha256 of the bytes checked: the bytes stored must be these (stored_bytes)


# ---------------------------------------------------------------------------- checking


def check(c: Candidate, max_pixels: int = MAX_PIXELS, max_side: int | None = None,
          store_size: int | None = None) -> Checked | dict:
    """Decodes one file fully; returns Checked, or a skipped-entry dict with the reason."""
    try:
        data = c.read()
    except OSError as e:  # sources.py raises OSError for every unreadable, special or oversized file
        return {"file": c.origin, "reason": f"cannot read file: {e.strerror or e}"}
    if not data:
        return {"file": c.origin, "reason": "empty file (0 bytes)"}
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return {"file": c.origin, "reason": "not an image (no known image format)"}
    except Image.DecompressionBombError as e:
        return {"file": c.origin, "reason": f"image too large: {e}"}
    except Exception as e:  # noqa: BLE001 - PIL raises many types for garbage headers
        return {"file": c.origin, "reason": f"not a readable image: {e}"}
    w, h = im.size
    if w * h > max_pixels:
        return {"file": c.origin, "reason": f"image too large: {w}x{h} pixels exceeds the {max_pixels} pixel limit"}
    try:
        im.load()
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data
        return {"file": c.origin, "reason": f"truncated or corrupt image data: {e}"}
    convert = None
    orientation = im.getexif().get(0x0112, 1)
    if im.format != "JPEG":
        convert = f"{im.format} {im.mode} content re-encoded as RGB JPEG"
    elif im.mode not in ("RGB", "L"):
        convert = f"{im.mode} JPEG converted to RGB"
    elif orientation != 1:
        convert = "EXIF orientation applied"
    if max_side and max(w, h) > max_side:
        convert = (convert + "; " if convert else "") + f"downscaled to max side {max_side}"
        s = max_side / max(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
    if convert and orientation in (5, 6, 7, 8):  # to_jpeg applies the orientation to any re-encoded photo
        w, h = h, w
    if store_size:  # re-encoded by stored_bytes; `convert` keeps only the reasons a photo needed it
        w = h = store_size
    if (convert or store_size) and max(w, h) > JPEG_MAX_SIDE:
        return {"file": c.origin, "reason": f"{w}x{h} pixels cannot be stored as a JPEG (at most {JPEG_MAX_SIDE} "
                                            "a side); give --max_side"}
    return Checked(c.id, c.label, c.origin, c.read, h, w, convert, hashlib.sha256(data).hexdigest())


def check_file(path: str, max_pixels: int = MAX_PIXELS) -> Checked:
    """One photo file given by name (any name), checked; an unreadable one is a RecordsError."""
    res = check(Candidate(files.name(path), kaggle.UNLABELED, str(path),
                          functools.partial(sources.read_file, path, sources.MAX_FILE_BYTES)), max_pixels)
    if isinstance(res, dict):
        raise RecordsError(f"{path}: {res['reason']}")
    return res


def stored_bytes(it: Checked, max_side: int | None = None, quality: int = 95, store_size: int | None = None) -> bytes:
    """The JPEG bytes records store for a checked file: its own, or its re-encoding (always with
    store_size). Without store_size, predicting from the file decodes these same bytes, so a photo
    gives the same pixels from its file and its record; with it, the record holds Pillow's S x S
    resize and the file path resizes with pipeline.decode_resize (RESULTS.md, experiment 31)."""
    data = it.read()
    if it.digest and hashlib.sha256(data).hexdigest() != it.digest:
        raise RecordsError(f"{it.origin}: changed while the build read it (its bytes differ from the ones checked); "
                           "run the build again once the folder is still")
    if not (it.convert or store_size):
        return data
    try:
        return to_jpeg(data, max_side, quality, store_size)
    except Exception as e:  # noqa: BLE001 - decoded fine at check time: name the photo, not the shard
        raise RecordsError(f"{it.origin}: cannot be re-encoded as JPEG ({type(e).__name__}: {e})") from None


def _rgb8(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB the way a browser shows it: 16-bit and 32-bit gray scaled
    (not clipped) to 8 bits, transparency composited on white, palettes and CMYK converted."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 255.0 if im.mode in ("I", "F") and a.max() <= 255 else 65535.0
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))  # browsers show transparency on white
        bg.paste(im, mask=im.getchannel("A"))
        return bg
    return im.convert("RGB")


def to_jpeg(data: bytes, max_side: int | None = None, quality: int = 95, size: int | None = None) -> bytes:
    """Re-encodes any decodable image as a baseline RGB JPEG the way a browser shows it.

    size: squashed to size x size first, with Pillow's bilinear filter (widened by the shrink
    factor: antialiased) and chroma kept at full resolution (4:4:4): BENCHMARKS.md measures
    both against Pillow's resize of the full photo."""
    im = _rgb8(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    if size:
        im = im.resize((size, size), Image.BILINEAR)
    elif max_side and max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, **({"subsampling": 0} if size else {}))
    return buf.getvalue()
