"""Pruning ablation at one MAC target and one retraining budget per row; prints a table.

Every row prunes the same distilled model to the same multiply-add target and then retrains for the
same number of epochs (local + fine-tune, or all of them fine-tuning when local retraining is off),
so rows differ only in the criterion, the per-layer ratios, or local retraining. Each row is an
`edgefer-worker prune` run in its own work directory (rerunning resumes); its model is exported to
ONNX (mirror averaging as shipped) and evaluated there, and its latency measured with onnxruntime.

    python benchmarks/prune_ablation.py --model runs/its/round3/model.pt --data ../shared/data/fer2013/train.npz \
        --test-data ../shared/data/fer2013/test_public.npz --target 0.5 --local-epochs 2 --finetune-epochs 4
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from model_latency import sample_faces  # the sibling script

from compression_worker.complexity import onnx_complexity
from compression_worker.evaluation import predict_file
from compression_worker.latency import latency_ms
from edgefer.datasets import load_faces
from edgefer.onnx_model import OnnxFaceClassifier

ROWS: dict[str, list[str]] = {
    "random channels, uniform": ["--importance", "random", "--ratios", "uniform"],
    "L1 of kernels (Li et al.), uniform": ["--importance", "l1", "--ratios", "uniform"],
    "BN gamma (slimming), uniform": ["--importance", "bn-gamma", "--ratios", "uniform"],
    "L2+gamma, uniform": ["--importance", "l2-gamma", "--ratios", "uniform"],
    "L2+gamma, derived ratios": ["--importance", "l2-gamma", "--ratios", "derived"],
    "L2+gamma, derived, no local retraining": ["--importance", "l2-gamma", "--ratios", "derived", "--no-local-retraining"],
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the distilled model.pt")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--test-data", type=Path, required=True)
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=Path("runs/prune-ablation"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help="a subset of the row names")
    args = parser.parse_args()
    test = load_faces(args.test_data)
    faces = sample_faces(256)
    reference = args.workdir / "unpruned.onnx"
    if not reference.exists():
        subprocess.check_call([sys.executable, "-m", "compression_worker.cli", "export", "--checkpoint", str(args.model),
                               "--output", str(reference), "--test-data", str(args.test_data)])
    results = [("unpruned (distilled)", reference)]
    for name in args.rows:
        folder = args.workdir / slug(name)
        cmd = [sys.executable, "-m", "compression_worker.cli", "prune", "--model", str(args.model), "--data", str(args.data),
               "--workdir", str(folder), "--target", str(args.target), "--local-epochs", str(args.local_epochs),
               "--finetune-epochs", str(args.finetune_epochs), "--threads", str(args.threads), *ROWS[name]]
        with (args.workdir / f"{slug(name)}.log").open("a") as log:
            subprocess.check_call(cmd, stdout=log, stderr=subprocess.STDOUT)
        onnx_path = folder / "pruned.onnx"
        if not onnx_path.exists():
            subprocess.check_call([sys.executable, "-m", "compression_worker.cli", "export", "--checkpoint",
                                   str(folder / "step1" / "model.pt"), "--output", str(onnx_path), "--test-data",
                                   str(args.test_data)], stdout=subprocess.DEVNULL)
        results.append((name, onnx_path))
    print(f"target: {100 * args.target:.0f}% fewer MACs; retraining: {args.local_epochs} + {args.finetune_epochs} epochs per row")
    print("| row | params | MACs/face (M) | test_public % | latency p50 (ms) | p99 (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, path in results:
        complexity = onnx_complexity(path)
        accuracy = float((predict_file(path, test, args.threads) == test.y).mean())
        p50, p99 = latency_ms(OnnxFaceClassifier(path, intra_op_threads=1), faces, 500)
        print(f"| {name} | {complexity.params:,} | {complexity.mmacs:.2f} | {100 * accuracy:.2f} | {p50:.3f} | {p99:.3f} |")


if __name__ == "__main__":
    main()
