"""Supervised training of EAN models: schedule, checkpoints and the epoch loop."""
