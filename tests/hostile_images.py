"""Encoded images that lie about their size, as an attacker or a broken camera sends them."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A valid gray PNG of `width` x `height` black pixels: under a megabyte that decodes to width*height bytes."""
    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the pixels
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header is rewritten to claim another size (JPEG has no checksum)."""
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16), 128, np.uint8))
    assert ok
    data = bytearray(encoded.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)
