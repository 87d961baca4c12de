"""The EAN model family."""

from compression_worker.model.ean import EAN, EANConfig, build_ean

__all__ = ["EAN", "EANConfig", "build_ean"]
