"""The thesis's method settled: hard labels, distillation, ITS and pruning, at one epoch budget, several seeds.

Every row trains the same student architecture for the same total number of epochs (split evenly across
rounds where a row has rounds) on the same validation split (--split-seed), with the same augmentation
and EMA, once per seed. The strong teacher (--teacher, repeat for an ensemble) teaches in `--mode`:
views (default: it labels --views stored augmented views of every face once, shared by every row and seed;
function matching at a CPU's cost) or consistent (the teacher on every augmented batch; a GPU's way).

    a  hard labels                          train, E epochs
    b  distilled                            1 round of E epochs from the teacher
    c  ITS, R rounds, weight transfer       round 1 from the teacher, then each EAN student teaches the next,
                                            which starts from its weights (E / R epochs a round)
    d  ITS, R rounds, no weight transfer    c with every round from a fresh init
    e1 b pruned, distilling                 b's model pruned to --max-macs (mirror-averaged, every pass
                                            counted) with local channel retraining, the teacher teaching throughout
    e2 a pruned, hard labels                a's model pruned the same way on hard labels

Accuracy is the final model's, one pass without the mirror (the models are compared, not the shipped graphs):
mean and sample standard deviation over the seeds; per-class recall on test_public for the best two rows.

    python benchmarks/kd_ablation.py --data ../shared/data/fer2013/train.npz \
        --test-data ../shared/data/fer2013/test_public.npz --teacher runs/vgg.pt --teacher models/ean-baseline.onnx \
        --arch ean-s --epochs 30 --rounds 3 --seeds 0 1 2 --out runs/kd-ablation
Rerunning resumes every unfinished run where it stopped; --report-only tabulates what is there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from compression_worker.evaluation import predict_file
from compression_worker.prune.structure import reduction_to_budget
from compression_worker.training.checkpoint import load_model
from edgefer.classification_report import ClassificationReport
from edgefer.datasets import Faces, load_faces
from edgefer.labels import CLASSES

TRAINED = ("a", "b", "c", "d")
PRUNED = {"e1": "b", "e2": "a"}  # pruned row -> the row whose model it prunes
NAMES = {
    "a": "hard labels",
    "b": "distilled",
    "c": "ITS, {R} rounds, weight transfer",
    "d": "ITS, {R} rounds, no weight transfer",
    "e1": "b pruned, distilling",
    "e2": "a pruned, hard labels",
}


def teacher_args(args: argparse.Namespace, prefix: str = "") -> list[str]:
    return [arg for path in args.teacher for arg in (f"--{prefix}teacher", str(path))]


def trained_row(row: str, args: argparse.Namespace) -> list[str]:
    """Worker command tail of a trained row (without data, seed, workdir)."""
    common = ["--arch", args.arch, "--ema-decay", str(args.ema_decay)]
    if row == "a":
        return ["train", "--epochs", str(args.epochs), *common]
    kd = ["--mode", args.mode, *teacher_args(args), "--temperature", str(args.temperature), "--alpha", str(args.alpha)]
    if args.mode == "views":
        kd += ["--views", str(args.views), "--view-cache", str(args.out / "views")]
    if row == "b":
        return ["distill", *kd, "--rounds", "1", "--epochs", str(args.epochs), *common]
    rounds = ["--rounds", str(args.rounds), "--epochs", str(args.epochs // args.rounds)]
    return ["distill", *kd, *rounds, *common, *(["--no-weight-transfer"] if row == "d" else [])]


def pruned_row(row: str, model: Path, args: argparse.Namespace) -> list[str]:
    """Worker command tail of a pruned row: its source row's model pruned to the MAC budget."""
    target = reduction_to_budget(load_model(model).config, args.max_macs)
    if target <= 0:
        raise ValueError(f"{model} fits {args.max_macs:,.0f} MACs a face already: nothing to prune")
    tail = ["prune", "--model", str(model), "--prune.target", f"{target:.4f}", "--prune.local-epochs",
            str(args.local_epochs), "--prune.finetune-epochs", str(args.finetune_epochs), "--ema-decay", str(args.ema_decay)]
    if row == "e2":
        return [*tail, "--prune.distill-mode", "cached", "--prune.alpha", "0"]
    kd = [*teacher_args(args, "prune."), "--prune.distill-mode", args.mode, "--prune.temperature",
          str(args.temperature), "--prune.alpha", str(args.alpha)]
    if args.mode == "views":
        kd += ["--prune.views", str(args.views), "--prune.view-cache", str(args.out / "views")]
    return [*tail, *kd]


def final_model(workdir: Path) -> Path:
    """The model a row ends with: the last round's, the last pruning step's, or train's model.pt."""
    for summary in ("its.json", "prune.json"):
        if (workdir / summary).exists():
            return Path(json.loads((workdir / summary).read_text())["final_model"])
    return workdir / "model.pt"


def run_one(args: argparse.Namespace, tail: list[str], workdir: Path) -> int:
    cmd = [sys.executable, "-m", "compression_worker.cli", *tail, "--data", str(args.data), "--split-seed",
           str(args.split_seed), "--workdir", str(workdir), "--threads", str(args.threads), "--device", args.device]
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with (workdir.parent / f"{workdir.name}.log").open("a") as log:
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)


def val_accuracy(model: Path) -> float | None:
    """The selected epoch's val accuracy: a round's or a step's metrics.json, or train's summary.json."""
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


def mean_of(values: list[float | None]) -> float:
    done = [v for v in values if v is not None]
    return statistics.mean(done) if done else -1.0


def report(args: argparse.Namespace, rows: list[str], test: Faces) -> dict[str, dict]:
    """Per row and seed: val and test_public accuracy and test per-class recall of the final model."""
    results: dict[str, dict] = {}
    for row in rows:
        models = [final_model(args.out / row / f"seed{seed}") for seed in args.seeds]
        reports = [ClassificationReport.from_predictions(test.y, predict_file(m, test, threads=args.threads))
                   if m.exists() else None for m in models]
        results[row] = {"name": NAMES[row].format(R=args.rounds), "val": [val_accuracy(m) for m in models],
                        "test": [r.accuracy if r else None for r in reports],
                        "test_recall": [r.per_class_recall if r else None for r in reports]}
    return results


def print_table(args: argparse.Namespace, results: dict[str, dict]) -> None:
    teacher = " + ".join(str(t) for t in args.teacher)
    print(f"{args.arch}, {args.epochs} epochs a row, seeds {args.seeds}, split seed {args.split_seed}, teacher "
          f"{teacher} ({args.mode}); accuracy in %, mean ± sample std, one pass")
    print("| row | what | val | test_public |")
    print("|---|---|---:|---:|")
    for row, result in results.items():
        print(f"| {row} | {result['name']} | {summarise(result['val'])} | {summarise(result['test'])} |")
    best = sorted(results, key=lambda r: mean_of(results[r]["val"]), reverse=True)[:2]
    print("\nper-class recall on test_public, mean over seeds, of the best two rows on val")
    print("| row | " + " | ".join(CLASSES) + " | macro |")
    print("|---|" + "---:|" * (len(CLASSES) + 1))
    for row in best:
        recalls = [r for r in results[row]["test_recall"] if r is not None]
        if recalls:
            per_class = [statistics.mean(r[name] for r in recalls) for name in CLASSES]
            cells = " | ".join(f"{100 * v:.1f}" for v in [*per_class, statistics.mean(per_class)])
            print(f"| {row} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--test-data", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, action="append", required=True,
                        help="the strong teacher (checkpoint or .onnx); repeat for an ensemble")
    parser.add_argument("--mode", choices=("views", "consistent"), default="views")
    parser.add_argument("--views", type=int, default=8, help="mode views: stored views per face")
    parser.add_argument("--arch", default="ean-s")
    parser.add_argument("--epochs", type=int, default=30, help="total epochs of every trained row")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of rows c and d")
    parser.add_argument("--max-macs", type=float, default=5e6, help="rows e: MACs a face of the pruned graph")
    parser.add_argument("--local-epochs", type=int, default=3, help="rows e: local channel retraining")
    parser.add_argument("--finetune-epochs", type=int, default=24, help="rows e: whole-network fine-tuning")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split-seed", type=int, default=0, help="one validation split for every row and seed")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.8)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--rows", nargs="+", choices=[*TRAINED, *PRUNED], default=[*TRAINED, *PRUNED])
    parser.add_argument("--out", type=Path, default=Path("runs/kd-ablation"))
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if args.epochs % args.rounds:
        parser.error(f"--epochs {args.epochs} is not a multiple of --rounds {args.rounds}")

    def work(job: tuple[str, int]) -> int:
        row, seed = job
        workdir = args.out / row / f"seed{seed}"
        if row in PRUNED:
            source = final_model(args.out / PRUNED[row] / f"seed{seed}")
            if not source.exists():
                print(f"{row} seed {seed}: row {PRUNED[row]} has no model yet", file=sys.stderr)
                return 1
            try:
                tail = pruned_row(row, source, args)
            except ValueError as error:
                print(f"{row} seed {seed}: {error}", file=sys.stderr)
                return 1
        else:
            tail = trained_row(row, args)
        return run_one(args, [*tail, "--seed", str(seed)], workdir)

    if not args.report_only:
        failed = []
        for phase in ([r for r in args.rows if r in TRAINED], [r for r in args.rows if r in PRUNED]):
            jobs = [(row, seed) for seed in args.seeds for row in phase]
            with ThreadPoolExecutor(args.parallel) as pool:
                failed += [f"{row} seed {seed}" for (row, seed), code in zip(jobs, pool.map(work, jobs)) if code]
        if failed:
            print("failed (see the .log beside each run): " + ", ".join(failed), file=sys.stderr)

    results = report(args, args.rows, load_faces(args.test_data))
    print_table(args, results)
    (args.out / "ablation.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
