"""The local fleet demo behind `make demo`."""
