"""The knowledge-distillation loss of Hinton et al. (2015), on cached or on live teacher targets.

loss = (1 - alpha) * CE(student, hard label) + alpha * T^2 * KL(soft || softmax(student / T))

Cached mode: `soft` are the teacher's probabilities at temperature T on the un-augmented faces, computed
once per round and read by face index (cheap on a CPU; the student sees augmented faces whose targets
were made for other pixels). Consistent mode ("function matching", Beyer et al. 2022): the teacher runs on
exactly the augmented and mixed batch the student sees, every step, so every target fits its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compression_worker.distill.teachers import Teacher
from compression_worker.training.trainer import Batch, Criterion, batch_cross_entropy


def kd_loss(
    student_logits: torch.Tensor,
    soft: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    return weighted(hard, student_logits, soft, alpha, temperature)


def weighted(hard: torch.Tensor, student_logits: torch.Tensor, soft: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """(1 - alpha) * the hard-label loss + alpha * the soft term: the one weighting of every mode."""
    return (1.0 - alpha) * hard + alpha * soft_term(student_logits, soft, temperature)


def soft_term(student_logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(soft || softmax(student / T)): the T^2 keeps its gradients on the hard term's scale."""
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return temperature**2 * F.kl_div(log_q, soft, reduction="batchmean")


def _combine(logits: torch.Tensor, batch: Batch, soft: torch.Tensor, alpha: float, temperature: float,
             label_smoothing: float) -> torch.Tensor:
    return weighted(batch_cross_entropy(logits, batch, label_smoothing), logits, soft, alpha, temperature)


def kd_criterion(soft_labels: torch.Tensor, alpha: float, temperature: float, label_smoothing: float = 0.0) -> Criterion:
    """Cached mode: each face's stored soft label by its index in the training set (mixed like the inputs)."""

    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return _combine(logits, batch, batch.blend(soft_labels[batch.indices]), alpha, temperature, label_smoothing)

    return loss


def consistent_kd_criterion(teacher: Teacher, alpha: float, temperature: float, label_smoothing: float = 0.0) -> Criterion:
    """Consistent mode: the teacher's probabilities at temperature T on the student's own batch."""

    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        soft = torch.softmax(teacher.logits(batch.x) / temperature, dim=1)
        return _combine(logits, batch, soft, alpha, temperature, label_smoothing)

    return loss
