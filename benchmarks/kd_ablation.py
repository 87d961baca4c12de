"""Does distillation help beyond epochs? Rows at one student and one total epoch budget, several seeds each.

Every row trains the same student architecture for the same total number of epochs (split evenly
across rounds where a row has rounds), for every seed given; each seed also draws its own validation
split. The table gives, per row, the final model's accuracy as mean and sample standard deviation over
the seeds (one pass, no mirror: the models are compared, not the shipped graphs):

    hard labels                      train, E epochs
    control: 2 rounds, alpha=0       round 1 on hard labels, round 2 continues it (weight transfer) on hard labels
    cached KD from M                 soft labels of teacher M computed once on un-augmented faces
    consistent KD from M             teacher M on every augmented batch (function matching)
    consistent KD from BIG           the same from the strong teacher(s) (--big, repeat for an ensemble)
    consistent from M, 2 rounds      round 2 learns from round 1 with its weights (ITS)
    ... no weight transfer           round 2 learns from round 1, from scratch
    ... refine=average               round 2 learns from the ensemble of M and round 1

    python benchmarks/kd_ablation.py --data ../shared/data/fer2013/train.npz \
        --test-data ../shared/data/fer2013/test_public.npz --teacher models/ean-baseline.onnx \
        --big runs/teacher-r18/model.pt --arch ean-s --epochs 40 --seeds 0 1 2 --parallel 8 --device cuda
Rerunning resumes every unfinished run; --report-only tabulates runs made elsewhere.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from compression_worker.evaluation import predict_file
from edgefer.datasets import load_faces


def rows(args: argparse.Namespace) -> dict[str, list[str]]:
    """Row name -> worker command tail (without data, epochs, seed, workdir)."""
    half = str(max(1, args.epochs // 2))
    teacher = ["--teacher", str(args.teacher)]
    kd = ["--temperature", str(args.temperature), "--alpha", str(args.alpha), "--ema-decay", str(args.ema_decay)]
    table = {
        "hard labels": ["train", "--epochs", str(args.epochs)],
        "control: 2 rounds, alpha=0": ["distill", "--mode", "consistent", *teacher, "--rounds", "2", "--epochs", half,
                                       "--alpha", "0", "--ema-decay", str(args.ema_decay)],
        "cached KD from M": ["distill", "--mode", "cached", *teacher, "--rounds", "1", "--epochs", str(args.epochs), *kd],
        "consistent KD from M": ["distill", "--mode", "consistent", *teacher, "--rounds", "1", "--epochs", str(args.epochs), *kd],
        "consistent from M, 2 rounds": ["distill", "--mode", "consistent", *teacher, "--rounds", "2", "--epochs", half, *kd],
        "consistent from M, 2 rounds, no weight transfer": ["distill", "--mode", "consistent", *teacher, "--rounds", "2",
                                                            "--epochs", half, "--no-weight-transfer", *kd],
        "consistent from M, 2 rounds, refine=average": ["distill", "--mode", "consistent", *teacher, "--rounds", "2",
                                                        "--epochs", half, "--refine", "average", *kd],
    }
    if args.big:
        big = [arg for path in args.big for arg in ("--teacher", str(path))]
        table["consistent KD from BIG"] = ["distill", "--mode", "consistent", *big, "--rounds", "1", "--epochs",
                                           str(args.epochs), *kd]
    return table


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def final_model(workdir: Path) -> Path:
    """The model a row ends with: train's model.pt, or the last round's."""
    its = workdir / "its.json"
    return Path(json.loads(its.read_text())["final_model"]) if its.exists() else workdir / "model.pt"


def run_one(args: argparse.Namespace, tail: list[str], workdir: Path) -> int:
    cmd = [sys.executable, "-m", "compression_worker.cli", *tail, "--arch", args.arch, "--data", str(args.data),
           "--workdir", str(workdir), "--threads", str(args.threads), "--device", args.device]
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with (workdir.parent / f"{workdir.name}.log").open("a") as log:
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)


def accuracy(model: Path, faces) -> float | None:
    return float(np.mean(predict_file(model, faces, threads=2) == faces.y)) if model.exists() else None


def val_accuracy(model: Path) -> float | None:
    """The selected epoch's val accuracy: a round's metrics.json, or train's summary.json."""
    metrics, summary = model.parent / "metrics.json", model.parent / "summary.json"
    if metrics.exists():
        return json.loads(metrics.read_text())["val_acc"]
    return json.loads(summary.read_text())["best_val_acc"] if summary.exists() else None


def summarise(values: list[float | None]) -> str:
    done = [100 * v for v in values if v is not None]
    if not done:
        return "-"
    spread = f" ± {statistics.stdev(done):.2f}" if len(done) > 1 else ""
    return f"{statistics.mean(done):.2f}{spread} (n={len(done)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--test-data", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True, help="teacher M: the ean-m baseline (.onnx or .pt)")
    parser.add_argument("--big", type=Path, action="append", default=[], help="the strong teacher(s); repeat for an ensemble")
    parser.add_argument("--arch", default="ean-s")
    parser.add_argument("--epochs", type=int, default=40, help="total epochs of every row")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.8)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--out", type=Path, default=Path("runs/kd-ablation"))
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    table = rows(args)
    jobs = [(name, seed) for name in table for seed in args.seeds]

    def work(job: tuple[str, int]) -> int:
        name, seed = job
        return run_one(args, [*table[name], "--seed", str(seed)], args.out / slug(name) / f"seed{seed}")

    if not args.report_only:
        with ThreadPoolExecutor(args.parallel) as pool:
            codes = dict(zip(jobs, pool.map(work, jobs)))
        failed = [f"{name} seed {seed}" for (name, seed), code in codes.items() if code]
        if failed:
            print("failed (see the .log beside each run): " + ", ".join(failed), file=sys.stderr)

    test = load_faces(args.test_data)
    results: dict[str, dict] = {}
    for name in table:
        models = [final_model(args.out / slug(name) / f"seed{seed}") for seed in args.seeds]
        results[name] = {"test": [accuracy(m, test) for m in models], "val": [val_accuracy(m) for m in models]}
    print(f"{args.arch}, {args.epochs} epochs in all per row, seeds {args.seeds}; accuracy in %, mean ± sample std")
    print("| row | test_public | val |")
    print("|---|---:|---:|")
    for name, result in results.items():
        print(f"| {name} | {summarise(result['test'])} | {summarise(result['val'])} |")
    (args.out / "ablation.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
