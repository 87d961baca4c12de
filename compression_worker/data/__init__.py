"""Tensor-side data handling for training: batched augmentation and epoch iteration."""
