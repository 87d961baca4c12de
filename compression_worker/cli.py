"""`edgefer-worker`: the compression worker's stages as subcommands (train, evaluate, export, summary).

Every stage reads its defaults from WorkerSettings (environment) and takes flags; a bad input ends with
one line naming the file and the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compression_worker.settings import WorkerSettings


def _add_train(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    from compression_worker.model.ean import PRESETS

    p = sub.add_parser("train", help="train an EAN on hard labels")
    p.add_argument("--data", type=Path, default=settings.train_data, help="npz, fer2013.csv or class folder")
    p.add_argument("--test-data", type=Path, default=None, help="evaluate the selected model on this set at the end")
    p.add_argument("--usage", default=None, help="with a fer2013.csv: the Usage rows to train on (e.g. Training)")
    p.add_argument("--arch", default="ean-s", choices=sorted(PRESETS))
    p.add_argument("--workdir", type=Path, default=settings.runs_dir / "train")
    p.add_argument("--fresh", action="store_true", help="discard a previous checkpoint in --workdir")
    p.add_argument("--epochs", type=int, default=55)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--erase-prob", type=float, default=0.25, help="share of faces with a random blanked patch")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=settings.device)
    p.add_argument("--threads", type=int, default=settings.threads)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    import shutil

    from compression_worker.data.augment import AugmentConfig
    from compression_worker.training.run import DataConfig, select_device, train_model
    from compression_worker.training.trainer import OptimConfig

    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
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
    )
    data = DataConfig(args.data, args.test_data, args.val_fraction, args.seed, args.usage)
    train_model(args.arch, data, optim, args.workdir, select_device(args.device), args.threads)


def build_parser(settings: WorkerSettings | None = None) -> argparse.ArgumentParser:
    settings = settings or WorkerSettings()
    parser = argparse.ArgumentParser(prog="edgefer-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub, settings)
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
