"""Training speed per architecture: images/s through the real training loop, and as a teacher.

`train img/s` runs `Trainer.fit` for one epoch over synthetic faces (augmentation and mixing on the
device, channels_last: the path every stage uses), so it includes what one training step really costs.
`teacher img/s` is a mirror-averaged eval-mode forward, what consistent distillation adds to every student
step. Each architecture runs once per `--precisions` entry (fp32, bf16 autocast; auto resolves as training
does). MACs are counted on an exported graph of one pass.

    python benchmarks/train_speed.py --archs ean-s ean-m resnet10-fer vgg13-fer --precisions fp32 bf16 --device cpu
    python benchmarks/train_speed.py --device cuda --batch-size 256 --steps 50
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from compression_worker.complexity import onnx_complexity
from compression_worker.data.mixing import MixConfig
from compression_worker.distill.teachers import TorchTeacher
from compression_worker.export import export_onnx
from compression_worker.model.ean import count_parameters
from compression_worker.model.zoo import ARCHITECTURES, build_model
from compression_worker.training.precision import PRECISIONS, cpu_bf16_features, resolve_precision
from compression_worker.training.run import select_device
from compression_worker.training.trainer import OptimConfig, Trainer
from edgefer.datasets import Faces


def synthetic(n: int) -> Faces:
    rng = np.random.default_rng(0)
    return Faces(rng.integers(0, 256, size=(n, 48, 48), dtype=np.uint8), rng.integers(0, 7, size=n).astype(np.int64), "synthetic")


def train_rate(arch: str, precision: str, device: torch.device, batch: int, steps: int, workdir: Path) -> float:
    torch.manual_seed(0)
    cfg = OptimConfig(epochs=1, batch_size=batch, mix=MixConfig(mixup_alpha=0.2), ema_decay=0.999, precision=precision)
    trainer = Trainer(build_model(arch), cfg, workdir / f"{arch}-{precision}", device)
    result = trainer.fit(synthetic(batch * steps), synthetic(batch))
    return batch * steps / result.history[0].seconds


def teacher_rate(arch: str, precision: str, device: torch.device, batch: int, steps: int) -> float:
    teacher = TorchTeacher(build_model(arch), device, mirror_average=True, precision=precision)
    x = torch.rand(batch, 1, 48, 48, device=device).mul(255).contiguous(memory_format=torch.channels_last)
    teacher.logits(x)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        teacher.logits(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["ean-s", "ean-m", "resnet10-fer", "resnet18-fer"], choices=ARCHITECTURES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="training steps (and teacher batches) per architecture")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=PRECISIONS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    features = ", ".join(cpu_bf16_features()) or "none"
    print(f"device {device}, batch {args.batch_size}, {args.steps} steps, {torch.get_num_threads()} threads, "
          f"CPU bf16 features: {features}")
    print("| arch | params | MMACs/pass | precision | train img/s | teacher img/s (mirror-averaged) |")
    print("|---|---:|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            model = build_model(arch)
            macs = onnx_complexity(export_onnx(model, Path(tmp) / f"{arch}.onnx", mirror_average=False)).mmacs
            for precision in args.precisions:
                used = resolve_precision(precision, device, model)
                train = train_rate(arch, used, device, args.batch_size, args.steps, Path(tmp))
                teach = teacher_rate(arch, used, device, args.batch_size, args.steps)
                print(f"| {arch} | {count_parameters(model):,} | {macs:.1f} | {used} | {train:,.0f} | {teach:,.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
