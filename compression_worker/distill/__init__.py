"""Iterative teacher-student transfer learning (ITS): self-distillation of EAN over rounds."""
