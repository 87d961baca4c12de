"""The FER2013 label set: one definition so that every model, card and runtime agrees on the order."""

from typing import Final

CLASSES: Final[tuple[str, ...]] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES: Final[int] = len(CLASSES)
FACE_SIZE: Final[int] = 48
