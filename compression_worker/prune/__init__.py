"""Structured channel pruning of EAN: importance criteria, per-layer ratios, DepGraph surgery, local retraining."""
