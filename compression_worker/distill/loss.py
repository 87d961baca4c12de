"""The knowledge-distillation loss of Hinton et al. (2015) on stored soft labels.

loss = (1 - alpha) * CE(student, hard label) + alpha * T^2 * KL(soft || softmax(student / T))

`soft` are the teacher's class probabilities at temperature T, computed once per round and stored,
so the loss reads them by face index instead of running the teacher in every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compression_worker.training.trainer import Criterion


def kd_loss(
    student_logits: torch.Tensor,
    soft: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(log_q, soft, reduction="batchmean")
    return (1.0 - alpha) * hard + alpha * temperature**2 * kl


def kd_criterion(soft_labels: torch.Tensor, alpha: float, temperature: float, label_smoothing: float = 0.0) -> Criterion:
    """A Trainer criterion that looks up each face's soft label by its index in the training set."""

    def loss(logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, soft_labels[indices], targets, alpha, temperature, label_smoothing)

    return loss
