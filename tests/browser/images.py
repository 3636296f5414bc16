"""Real image files for the photo tests and the screenshots, written without an imaging library."""
from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

Pixel = Callable[[int, int], tuple[int, int, int]]


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, pixel: Pixel) -> bytes:
    """An 8-bit RGB PNG whose colour at (x, y) is `pixel(x, y)`."""
    rows = (b"\x00" + bytes(channel for x in range(width) for channel in pixel(x, y)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + _chunk(b"IEND", b""))


def sunset(width: int, height: int) -> Pixel:
    """A sky fading into a dark hill with a sun: something that looks like a photo in a screenshot."""
    sun_x, sun_y, sun_r = width * 0.68, height * 0.42, min(width, height) * 0.12

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        hill = height * 0.7 - 0.12 * height * ((x / width) - 0.3) ** 2 * 4
        if y > hill:
            return (34 + y % 7, 62 + (x * 3) % 11, 48)
        if (x - sun_x) ** 2 + (y - sun_y) ** 2 < sun_r ** 2:
            return (255, 214, 102)
        t = y / height
        return (int(250 - 90 * t), int(140 + 40 * t), int(90 + 140 * t))

    return pixel


def write_png(path: Path, width: int = 300, height: int = 200) -> Path:
    path.write_bytes(png_bytes(width, height, sunset(width, height)))
    return path
