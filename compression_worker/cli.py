"""`edgefer-worker`: the compression worker's stages as subcommands (train, distill, evaluate, export, prune,
quantize).

Every stage reads its defaults from WorkerSettings (environment) and takes flags; a bad input ends with
one line naming the file and the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compression_worker.settings import WorkerSettings


def _add_training_flags(p: argparse.ArgumentParser, settings: WorkerSettings, workdir: str, epochs: int) -> None:
    """Flags shared by every stage that trains: data, architecture, optimiser, schedule, device."""
    from compression_worker.model.zoo import ARCHITECTURES

    p.add_argument("--data", type=Path, default=settings.train_data, help="npz, fer2013.csv or class folder")
    p.add_argument("--test-data", type=Path, default=None, help="also report accuracy on this set (never used to choose)")
    p.add_argument("--usage", default=None, help="with a fer2013.csv: the Usage rows to train on (e.g. Training)")
    p.add_argument("--arch", default="ean-s", choices=ARCHITECTURES,
                   help="an EAN preset; train also takes the teachers that never ship (resnet18-fer, vgg13-fer, ...)")
    p.add_argument("--workdir", type=Path, default=settings.runs_dir / workdir,
                   help="checkpoints, logs and results (default: $EDGEFER_RUNS_DIR/%(default)s)")
    p.add_argument("--fresh", action="store_true", help="discard previous results in --workdir")
    p.add_argument("--epochs", type=int, default=epochs, help="epochs (per round, for distill)")
    p.add_argument("--batch-size", type=int, default=128, help="faces per step (default: %(default)s)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"], help="SGD with Nesterov momentum, or AdamW")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the cosine schedule (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="(default: %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="on the hard-label loss (default: %(default)s)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up before the cosine decay (default: %(default)s)")
    p.add_argument("--erase-prob", type=float, default=0.25, help="share of faces with a random blanked patch")
    p.add_argument("--mixup", type=float, default=0.0, help="mixup Beta(a, a) parameter (0: off)")
    p.add_argument("--cutmix", type=float, default=0.0, help="CutMix Beta(a, a) parameter (0: off)")
    p.add_argument("--mix-prob", type=float, default=1.0, help="share of batches mixed when mixup or CutMix is on")
    p.add_argument("--ema-decay", type=float, default=0.0, help="keep and validate an EMA of the weights (e.g. 0.999; 0: off)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="stratified validation split held out of the training data for every choice (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="weights, augmentation and (unless --split-seed) the split")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the validation split (default: --seed); fix it so that seeds of an ensemble share one split")
    p.add_argument("--device", default=settings.device, help="cpu, cuda or auto (default: %(default)s; $EDGEFER_DEVICE)")
    _add_threads(p, settings)


def _training_setup(args: argparse.Namespace):
    """(DataConfig, OptimConfig, device) from the shared training flags; clears --workdir on --fresh."""
    import shutil

    import torch

    from compression_worker.data.augment import AugmentConfig
    from compression_worker.data.mixing import MixConfig
    from compression_worker.training.run import DataConfig, select_device
    from compression_worker.training.trainer import OptimConfig

    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
    torch.set_num_threads(args.threads)
    optim = OptimConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        augment=AugmentConfig(erase_prob=args.erase_prob),
        mix=MixConfig(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mix_prob),
        ema_decay=args.ema_decay,
    )
    split_seed = args.seed if args.split_seed is None else args.split_seed
    data = DataConfig(args.data, args.test_data, args.val_fraction, split_seed, args.usage)
    return data, optim, select_device(args.device)


def _add_threads(p: argparse.ArgumentParser, settings: WorkerSettings) -> None:
    p.add_argument("--threads", type=int, default=settings.threads,
                   help="torch and onnxruntime threads (default: %(default)s; $EDGEFER_THREADS, 0: all cores)")


def _add_train(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    p = sub.add_parser("train", help="train an EAN (or a teacher of the zoo) on hard labels")
    _add_training_flags(p, settings, "train", epochs=55)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from compression_worker.training.run import train_model

    data, optim, device = _training_setup(args)
    train_model(args.arch, data, optim, args.workdir, device)


def _add_distill(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    p = sub.add_parser("distill", help="iterative teacher-student transfer learning (ITS), resumable per round")
    _add_training_flags(p, settings, "distill", epochs=20)
    p.add_argument("--rounds", type=int, default=3, help="student rounds after the round-0 teacher")
    p.add_argument("--temperature", type=float, default=4.0, help="softmax temperature of the soft labels (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.7, help="weight of the soft-label term")
    p.add_argument("--no-weight-transfer", action="store_true", help="start each student from scratch")
    p.add_argument("--refine", default="latest", choices=["latest", "average"], help="how soft labels combine across rounds")
    p.add_argument("--no-mirror-soft-labels", action="store_true", help="soft labels from the face alone, not face+mirror")
    p.add_argument("--restart-lr", type=float, default=0.05, help="peak learning rate of a warm-restarted round")
    p.add_argument("--teacher", type=Path, action="append", default=[],
                   help="round 0 given, not trained: a checkpoint of any zoo architecture or an .onnx; repeat for an ensemble")
    p.add_argument("--mode", default="cached", choices=["cached", "consistent"],
                   help="cached soft labels per round, or the teacher on every augmented batch (function matching)")
    p.add_argument("--student-init", type=Path, default=None,
                   help="round 1's starting weights when the teacher is another architecture (an EAN model.pt)")
    p.set_defaults(func=_run_distill)


def _run_distill(args: argparse.Namespace) -> None:
    from compression_worker.distill.its import ITSConfig, run_its

    data, optim, device = _training_setup(args)
    cfg = ITSConfig(
        arch=args.arch,
        rounds=args.rounds,
        temperature=args.temperature,
        alpha=args.alpha,
        weight_transfer=not args.no_weight_transfer,
        refine=args.refine,
        mirror_soft_labels=not args.no_mirror_soft_labels,
        restart_lr=args.restart_lr,
        teachers=tuple(args.teacher),
        mode=args.mode,
        student_init=args.student_init,
    )
    run_its(cfg, data, optim, args.workdir, device)


def _add_evaluate(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    p = sub.add_parser("evaluate", help="top-1, per-class recall and confusion matrix of a model file")
    p.add_argument("--model", type=Path, required=True, help=".onnx (run by onnxruntime) or an EAN .pt checkpoint")
    p.add_argument("--data", type=Path, default=settings.test_data,
                   help="faces to evaluate on (default: $EDGEFER_DATA_DIR/test_public.npz)")
    p.add_argument("--usage", default=None, help="with a fer2013.csv: the Usage rows to evaluate (e.g. PublicTest)")
    p.add_argument("--out-dir", type=Path, default=None, help="write metrics.json and confusion.png here")
    _add_threads(p, settings)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    from compression_worker.evaluation import evaluate_file
    from edgefer.datasets import load_faces

    report = evaluate_file(args.model, load_faces(args.data, args.usage), args.out_dir, args.threads)
    print(report.format_table())
    if args.out_dir:
        print(f"\nwrote {args.out_dir / 'metrics.json'} and {args.out_dir / 'confusion.png'}")


def _add_export(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX, check parity and write its model card")
    p.add_argument("--checkpoint", type=Path, required=True, help="model.pt written by train")
    p.add_argument("--output", type=Path, required=True, help="the .onnx file; the card is written beside it as .json")
    p.add_argument("--test-data", type=Path, default=settings.test_data, help="faces for parity and the card's accuracy")
    p.add_argument("--no-mirror-average", action="store_true", help="do not bake mirror averaging into the graph")
    p.add_argument("--parity-faces", type=int, default=512, help="faces on which torch and onnxruntime must agree (default: %(default)s)")
    _add_threads(p, settings)
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from compression_worker.release import export_checkpoint

    card, report = export_checkpoint(args.checkpoint, args.output, args.test_data, not args.no_mirror_average,
                                     args.parity_faces, args.threads)
    print(report.format_table())
    print(f"\nwrote {args.output} ({card.size_bytes:,} bytes, {card.macs_per_face / 1e6:.2f}M MACs/face, "
          f"{card.params:,} params) and {args.output.with_suffix('.json')}")


def _add_prune(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    from compression_worker.prune.importance import IMPORTANCES
    from compression_worker.prune.run import PruneConfig

    p = sub.add_parser("prune", help="structured channel pruning with local channel retraining, resumable per step")
    _add_training_flags(p, settings, "prune", epochs=1)  # per phase: --local-epochs, --finetune-epochs
    p.set_defaults(lr=0.02, func=_run_prune)
    p.add_argument("--model", type=Path, required=True, help="the (distilled) model.pt to prune")
    p.add_argument("--target", type=float, default=0.5, help="share of multiply-adds to remove (0..1)")
    p.add_argument("--importance", default=PruneConfig.importance, choices=IMPORTANCES,
                   help="channel importance: kernel L2 norm x BatchNorm gamma (default), or an ablation")
    p.add_argument("--l2-weight", type=float, default=0.5, help="l2-gamma: weight of the kernel L2 norm against |gamma|")
    p.add_argument("--ratios", default="derived", choices=["derived", "uniform"], help="per-layer ratios")
    p.add_argument("--min-keep-fraction", type=float, default=0.2, help="floor of channels kept per layer")
    p.add_argument("--max-ratio", type=float, default=0.8, help="cap on any layer's pruning ratio")
    p.add_argument("--channel-multiple", type=int, default=8,
                   help="round kept channels up to a multiple of this (onnxruntime CPU kernels block by 8; 1: exact)")
    p.add_argument("--steps", type=int, default=1, help="iterative pruning: prune+retrain steps to reach the target")
    p.add_argument("--local-epochs", type=int, default=3, help="per step, retraining only the touched layers")
    p.add_argument("--finetune-epochs", type=int, default=6, help="per step, fine-tuning the whole network")
    p.add_argument("--no-local-retraining", action="store_true", help="spend the local epochs on whole-network fine-tuning")
    p.add_argument("--temperature", type=float, default=2.0, help="softmax temperature of the teacher's soft labels (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the teacher's soft labels")
    p.add_argument("--teacher", type=Path, action="append", default=[],
                   help="learn from this model (checkpoint or .onnx; repeat for an ensemble) instead of the model being pruned")
    p.add_argument("--distill-mode", default="cached", choices=["cached", "consistent"],
                   help="retrain on cached soft labels, or with the teacher on every augmented batch")


def _run_prune(args: argparse.Namespace) -> None:
    from compression_worker.prune.run import PruneConfig, run_prune

    data, optim, device = _training_setup(args)
    cfg = PruneConfig(
        target_macs_reduction=args.target,
        importance=args.importance,
        l2_weight=args.l2_weight,
        ratios=args.ratios,
        min_keep_fraction=args.min_keep_fraction,
        max_ratio=args.max_ratio,
        channel_multiple=args.channel_multiple,
        steps=args.steps,
        local_epochs=args.local_epochs,
        finetune_epochs=args.finetune_epochs,
        local_retraining=not args.no_local_retraining,
        temperature=args.temperature,
        alpha=args.alpha,
        teachers=tuple(str(t) for t in args.teacher),
        distill_mode=args.distill_mode,
    )
    run_prune(args.model, cfg, data, optim, args.workdir, device)


def _add_quantize(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    p = sub.add_parser("quantize", help="INT8 static quantization (QDQ, per-channel) of an exported ONNX model")
    p.add_argument("--model", type=Path, required=True, help="the float .onnx (with its .json card beside it)")
    p.add_argument("--output", type=Path, required=True, help="the INT8 .onnx file; its card is written beside it")
    p.add_argument("--data", type=Path, default=settings.train_data, help="training faces to calibrate on")
    p.add_argument("--usage", default=None, help="with a fer2013.csv: the Usage rows to calibrate on")
    p.add_argument("--calibration-faces", type=int, default=700, help="faces the activation ranges are measured on (default: %(default)s)")
    p.add_argument("--test-data", type=Path, default=settings.test_data, help="faces for the float vs INT8 accuracy")
    _add_threads(p, settings)
    p.set_defaults(func=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> None:
    from compression_worker.release import quantize_model
    from edgefer.datasets import load_faces

    train = load_faces(args.data, args.usage)
    card, report, float_accuracy = quantize_model(args.model, args.output, train, args.calibration_faces, args.test_data,
                                                  args.threads)
    print(report.format_table())
    print(f"\nINT8 {100 * report.accuracy:.2f}% vs float {100 * float_accuracy:.2f}% on {args.test_data.name}; "
          f"wrote {args.output} ({card.size_bytes:,} bytes) and {args.output.with_suffix('.json')}")


def build_parser(settings: WorkerSettings | None = None) -> argparse.ArgumentParser:
    settings = settings or WorkerSettings()
    parser = argparse.ArgumentParser(prog="edgefer-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub, settings)
    _add_distill(sub, settings)
    _add_evaluate(sub, settings)
    _add_export(sub, settings)
    _add_prune(sub, settings)
    _add_quantize(sub, settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    from edgefer.datasets import DatasetError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"edgefer-worker {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgefer-worker {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
