"""Decoding: draft JPEG reduction against a full decode, every colour mode, EXIF orientation."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from wgan.dataset import DRAFT_TOLERANCE, decode_image


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_draft_is_within_tolerance_of_a_full_decode(hymenoptera):
    # Photos from 193x130 to 2592x1944: every reduction (1/2, 1/4, 1/8) is exercised.
    files = sorted(p for p in hymenoptera.rglob("*.jpg"))[::4]
    reductions, diffs = set(), []
    for path in files:
        with Image.open(path) as img:
            reductions.add(round(img.size[0] / img.draft("RGB", (64, 64))[1][2]))
        draft = decode_image(path, 64, draft=True)
        full = decode_image(path, 64, draft=False)
        diffs.append(mean_abs_diff(draft, full))
    assert {2, 4, 8} <= reductions
    assert max(diffs) <= DRAFT_TOLERANCE, (max(diffs), files[int(np.argmax(diffs))])
    assert np.median(diffs) <= 2.5  # typical photos agree much more closely


def test_draft_keeps_the_geometry_of_a_full_decode():
    # A 500x333 image reduces by 4 to 125x84 pixels, the last row partly padding: a sharp
    # edge must land where a full decode puts it.
    img = np.zeros((333, 500, 3), np.uint8)
    img[:, 250:] = 255
    img[200:] = 128
    data = encode(Image.fromarray(img), "JPEG", quality=95)
    assert mean_abs_diff(decode_image(data, 64), decode_image(data, 64, draft=False)) < 1.5


def test_draft_is_not_used_below_twice_the_size(flowers):
    # 128-pixel photos at 128: no reduction is possible, so the result is exactly a full decode.
    path = next((flowers / "rose").iterdir())
    assert np.array_equal(decode_image(path, 128), decode_image(path, 128, draft=False))


def png_rgb16(w: int, h: int, rgb: tuple[int, int, int]) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot write one)."""
    row = b"\0" + struct.pack(">" + "HHH" * w, *(rgb * w))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(row * h)) + chunk(b"IEND", b""))


def palette_png(transparent: bool) -> bytes:
    img = Image.new("P", (40, 30), 0)
    img.putpalette([10, 200, 30] + [0] * 765)
    return encode(img, "PNG", **({"transparency": 0} if transparent else {}))


MODES = {
    "grey L": (encode(Image.new("L", (40, 30), 77), "PNG"), (77, 77, 77)),
    "grey JPEG": (encode(Image.new("L", (40, 30), 77), "JPEG", quality=95), (77, 77, 77)),
    "1-bit": (encode(Image.new("1", (40, 30), 1), "PNG"), (255, 255, 255)),
    "CMYK JPEG": (encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95),
                  (255, 0, 0)),
    "CMYK TIFF": (encode(Image.new("CMYK", (40, 30), (255, 0, 255, 0)), "TIFF"), (0, 255, 0)),
    "palette": (palette_png(False), (10, 200, 30)),
    "palette, transparent": (palette_png(True), (255, 255, 255)),
    "RGBA half": (encode(Image.new("RGBA", (40, 30), (0, 0, 0, 128)), "PNG"), (127, 127, 127)),
    "RGBA opaque WebP": (encode(Image.new("RGBA", (40, 30), (200, 0, 50, 255)), "WEBP",
                                lossless=True), (200, 0, 50)),
    "grey+alpha LA": (encode(Image.new("LA", (40, 30), (0, 0)), "PNG"), (255, 255, 255)),
    "16-bit grey PNG": (encode(Image.fromarray(np.full((30, 40), 32896, np.uint16)), "PNG"),
                        (128, 128, 128)),
    "16-bit grey TIFF": (encode(Image.fromarray(np.full((30, 40), 65535, np.uint16)), "TIFF"),
                         (255, 255, 255)),
    "16-bit RGB PNG": (png_rgb16(40, 30, (65535, 32896, 0)), (255, 128, 0)),
    "16-bit PGM": (b"P5 40 30 65535\n" + np.full(1200, 16448, ">u2").tobytes(), (64, 64, 64)),
    "float TIFF": (encode(Image.fromarray(np.full((30, 40), 0.5, np.float32)), "TIFF"),
                   (128, 128, 128)),
}


@pytest.mark.parametrize("name", list(MODES))
def test_every_mode_comes_out_as_rgb(name):
    data, rgb = MODES[name]
    out = decode_image(data, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.reshape(-1, 3).astype(int) - rgb).max() <= 2, out[8, 8]


def test_grey_output_from_colour():
    out = decode_image(encode(Image.new("RGB", (40, 30), (255, 0, 0)), "PNG"), 16, channels=1)
    assert out.shape == (16, 16, 1) and abs(int(out[8, 8, 0]) - 76) <= 1  # ITU-R 601 luma


def quadrants(w: int, h: int) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    arr[: h // 2, w // 2:] = (0, 255, 0)
    arr[h // 2:, : w // 2] = (0, 0, 255)
    arr[h // 2:, w // 2:] = 255
    return Image.fromarray(arr)


# What a camera stores for each EXIF orientation: the upright image, transformed so that
# applying the orientation's correction gives it back.
STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
          6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_is_applied(orientation, fmt):
    upright = quadrants(480, 320)
    stored = upright.transpose(STORED[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    expected = decode_image(encode(upright, "PNG"), 32)
    out = decode_image(data, 32)
    assert mean_abs_diff(out, expected) < 3.0
    # The corners of the centre crop keep their colours: the orientation really was applied.
    assert tuple(out[2, 2].tolist()) == pytest.approx((255, 0, 0), abs=12)
    assert tuple(out[2, 29].tolist()) == pytest.approx((0, 255, 0), abs=12)
    assert tuple(out[29, 2].tolist()) == pytest.approx((0, 0, 255), abs=12)
