"""Turning a wire Frame into a gray image, with every way it can be malformed named in the error.

Every frame's size is checked before any allocation proportional to it: raw frames by their declared
width and height, encoded frames by the width and height in their JPEG or PNG header (a small file can
claim a huge image). Whatever the decoder still refuses becomes a FrameError, never an unexpected error.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgefer.v1 import edge_pb2
from services.edge.image_header import HeaderError, image_size

MAX_SIDE = 4096
MAX_PIXELS = 4096 * 3072


class FrameError(ValueError):
    """A frame that cannot be decoded; maps to gRPC INVALID_ARGUMENT (or RESOURCE_EXHAUSTED when too big)."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise FrameError(f"image has zero size ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise FrameError(f"image {width}x{height} exceeds the limit of {MAX_SIDE} per side and {MAX_PIXELS} pixels", too_large=True)


def decode_gray(frame: edge_pb2.Frame) -> np.ndarray:
    """The frame as a uint8 gray image (H, W)."""
    kind = frame.WhichOneof("image")
    if kind is None:
        raise FrameError("frame has no image: set encoded or raw")
    if kind == "encoded":
        return _decode_encoded(frame.encoded)
    return _decode_raw(frame.raw)


def _decode_encoded(data: bytes) -> np.ndarray:
    if not data:
        raise FrameError("encoded image is empty")
    try:
        _check_size(*image_size(data))
    except HeaderError as exc:
        raise FrameError(f"not a decodable JPEG or PNG image: {exc}") from exc
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    except cv2.error as exc:  # OpenCV's own checks (pixel limits, corrupt streams) raise instead of returning None
        raise FrameError(f"the image decoder refused the encoded bytes ({exc.err or 'cv2.error'})") from exc
    if image is None:
        raise FrameError("encoded bytes are not a decodable JPEG or PNG image")
    _check_size(image.shape[1], image.shape[0])
    return image


_CHANNELS = {edge_pb2.PIXEL_FORMAT_GRAY: 1, edge_pb2.PIXEL_FORMAT_BGR: 3}


def _decode_raw(raw: edge_pb2.RawImage) -> np.ndarray:
    channels = _CHANNELS.get(raw.format)
    if channels is None:
        raise FrameError(f"unknown pixel format {raw.format}; use PIXEL_FORMAT_GRAY or PIXEL_FORMAT_BGR")
    _check_size(raw.width, raw.height)
    expected = raw.width * raw.height * channels
    if len(raw.pixels) != expected:
        raise FrameError(
            f"raw buffer has {len(raw.pixels)} bytes but {raw.width}x{raw.height} with {channels} channel(s) needs {expected}"
        )
    pixels = np.frombuffer(raw.pixels, dtype=np.uint8)
    if channels == 1:
        return pixels.reshape(raw.height, raw.width)
    return cv2.cvtColor(pixels.reshape(raw.height, raw.width, 3), cv2.COLOR_BGR2GRAY)
