"""EdgeFER shared core: what the edge runtime and the compression worker both need, without torch."""

__version__ = "0.1.0"
