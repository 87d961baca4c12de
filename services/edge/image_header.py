"""Width and height of a JPEG or PNG read from its header, without decoding a pixel.

A few hundred compressed bytes can claim a 30000x30000 image (a decompression bomb): the size is
checked here, before OpenCV allocates anything for it.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# Start-of-frame markers carry the image size; C4 (Huffman tables), C8 (reserved) and CC (arithmetic
# coding conditioning) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn have no length field


class HeaderError(ValueError):
    """Bytes that are not a well-formed JPEG or PNG header."""


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk or a JPEG's start-of-frame segment."""
    if data.startswith(PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise HeaderError("PNG without an IHDR chunk at its start")
        return struct.unpack(">II", data[16:24])
    if data.startswith(JPEG_SOI):
        return _jpeg_size(data)
    raise HeaderError("encoded bytes are neither JPEG nor PNG")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise HeaderError(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise HeaderError(f"JPEG segment at byte {pos} has length {length}")
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            raise HeaderError("JPEG has image data before its frame header")
        pos += 2 + length
    raise HeaderError("JPEG ends before its frame header")
