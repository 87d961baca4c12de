"""`edgefer-worker`: the compression worker's stages as subcommands (train, distill, evaluate, export, prune,
quantize).

Every stage reads its defaults from WorkerSettings (environment) and takes flags, generated from the fields
of the stage's config dataclasses (OptimConfig, ITSConfig, PruneConfig, ...); a bad input ends with one line
naming the file and the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compression_worker.lineage_store import LineageStore
from compression_worker.settings import WorkerSettings
from edgefer.env_settings import resolve_threads
from edgefer.jobs.lineage import Artefact
from edgefer.settings_fields import add_dataclass_arguments, dataclass_from_namespace


def _add_training_flags(p: argparse.ArgumentParser, settings: WorkerSettings, workdir: str, **defaults: object) -> None:
    """Flags shared by every stage that trains, generated from DataConfig and OptimConfig (with its augmentation
    and mixing settings): data, optimiser, schedule, augmentation, seeds; plus architecture, workdir and device."""
    from compression_worker.model.zoo import ARCHITECTURES
    from compression_worker.training.run import DataConfig
    from compression_worker.training.trainer import OptimConfig

    add_dataclass_arguments(p, DataConfig, defaults={"train_path": settings.train_data, "split_seed": None})
    add_dataclass_arguments(p, OptimConfig, defaults=defaults, section="optim")
    p.add_argument("--arch", default="ean-s", choices=ARCHITECTURES,
                   help="an EAN preset; train also takes the teachers that never ship (resnet18-fer, vgg13-fer, ...)")
    p.add_argument("--workdir", type=Path, default=settings.runs_dir / workdir,
                   help="checkpoints, logs and results (default: $EDGEFER_RUNS_DIR/%(default)s)")
    p.add_argument("--fresh", action="store_true", help="discard previous results in --workdir")
    p.add_argument("--device", default=settings.device, help="cpu, cuda or auto (default: %(default)s; $EDGEFER_DEVICE)")
    _add_threads(p, settings)


def _training_setup(args: argparse.Namespace):
    """(DataConfig, OptimConfig, device) from the shared training flags; clears --workdir on --fresh."""
    import shutil

    import torch

    from compression_worker.training.run import DataConfig, select_device
    from compression_worker.training.trainer import OptimConfig

    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
    torch.set_num_threads(args.threads)
    optim = dataclass_from_namespace(OptimConfig, args, "optim")
    split_seed = optim.seed if args.split_seed is None else args.split_seed
    data = dataclass_from_namespace(DataConfig, args, split_seed=split_seed)
    return data, optim, select_device(args.device)


def _add_threads(p: argparse.ArgumentParser, settings: WorkerSettings) -> None:
    p.add_argument("--threads", type=lambda raw: resolve_threads("--threads", int(raw)), default=settings.threads,
                   help="torch and onnxruntime threads (default: %(default)s; $EDGEFER_THREADS, 0: all cores)")


def _add_train(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    p = sub.add_parser("train", help="train an EAN (or a teacher of the zoo) on hard labels")
    _add_training_flags(p, settings, "train")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from this model file's weights (same architecture) with a fresh optimiser and "
                        "schedule: a warm restart that continues a finished run")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from compression_worker.training.run import train_model

    data, optim, device = _training_setup(args)
    train_model(args.arch, data, optim, args.workdir, device, init_from=args.init_from)


def _add_distill(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    from compression_worker.distill.its import ITSConfig

    p = sub.add_parser("distill", help="iterative teacher-student transfer learning (ITS), resumable per round")
    _add_training_flags(p, settings, "distill", epochs=20)
    add_dataclass_arguments(p, ITSConfig, exclude=("arch",), section="distill")
    p.set_defaults(func=_run_distill)


def _run_distill(args: argparse.Namespace) -> None:
    from compression_worker.distill.its import ITSConfig, run_its

    data, optim, device = _training_setup(args)
    cfg = dataclass_from_namespace(ITSConfig, args, "distill", arch=args.arch)
    run_its(cfg, data, optim, args.workdir, device, args.threads)


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
    p.add_argument("--weights", choices=["fp32", "fp16", "int8"], default="fp32",
                   help="how the weights are stored: fp16 halves the file, int8 (static, calibrated on --data) quarters "
                        "it and runs 3-4x faster on a CPU with VNNI; for teachers that ship in the repository, checked "
                        "to predict as fp32 on the parity faces (default: %(default)s)")
    p.add_argument("--fp16-weights", dest="weights", action="store_const", const="fp16", help="the same as --weights fp16")
    p.add_argument("--data", type=Path, default=settings.train_data, help="--weights int8: training faces to calibrate on")
    p.add_argument("--calibration-faces", type=int, default=700, help="--weights int8: faces the activation ranges are "
                   "measured on (default: %(default)s)")
    _add_threads(p, settings)
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from compression_worker.quantize import calibration_faces
    from compression_worker.release import export_checkpoint
    from edgefer.datasets import load_faces

    calibration = None
    if args.weights == "int8":
        train = load_faces(args.data)
        calibration = calibration_faces(train.x, train.y, args.calibration_faces)
    card, report = export_checkpoint(args.checkpoint, args.output, args.test_data, not args.no_mirror_average,
                                     args.parity_faces, threads=args.threads, weights=args.weights,
                                     calibration=calibration)
    print(report.format_table())
    print(f"\nwrote {args.output} ({card.size_bytes:,} bytes, {card.macs_per_face / 1e6:.2f}M MACs/face, "
          f"{card.params:,} params) and {args.output.with_suffix('.json')}")


def _add_prune(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    from compression_worker.prune.run import PruneConfig

    p = sub.add_parser("prune", help="structured channel pruning with local channel retraining, resumable per step")
    _add_training_flags(p, settings, "prune", epochs=1, lr=0.02)  # per phase: --local-epochs, --finetune-epochs
    p.add_argument("--model", type=Path, required=True, help="the (distilled) model.pt to prune")
    add_dataclass_arguments(p, PruneConfig, section="prune")
    p.set_defaults(func=_run_prune)


def _run_prune(args: argparse.Namespace) -> None:
    from compression_worker.prune.run import PruneConfig, run_prune

    data, optim, device = _training_setup(args)
    cfg = dataclass_from_namespace(PruneConfig, args, "prune")
    run_prune(args.model, cfg, data, optim, args.workdir, device, args.threads)


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


def _add_balance(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    from compression_worker.training.run import DataConfig

    p = sub.add_parser("balance", help="logit adjustment of an exported graph toward the rare classes, tau chosen on "
                       "the held-back faces (macro recall up, top-1 within --max-drop)")
    p.add_argument("--model", type=Path, required=True, help="the exported .onnx (float or INT8; its card beside it)")
    p.add_argument("--output", type=Path, required=True, help="the adjusted .onnx; its card is written beside it")
    p.add_argument("--max-drop", type=float, default=0.3,
                   help="points of held-back top-1 the adjustment may cost (default: %(default)s)")
    add_dataclass_arguments(p, DataConfig, defaults={"train_path": settings.train_data,
                                                     "test_path": settings.test_data})
    _add_threads(p, settings)
    p.set_defaults(func=_run_balance)


def _run_balance(args: argparse.Namespace) -> None:
    from compression_worker.release import balance_model
    from compression_worker.training.run import DataConfig, load_splits

    data = dataclass_from_namespace(DataConfig, args)
    if data.test_path is None:
        raise ValueError("balance needs --test-data: the faces its card reports on")
    card, report, choice = balance_model(args.model, args.output, load_splits(data), data.test_path, args.max_drop,
                                         args.threads)
    print("tau   held-back top-1  macro recall")
    for row in choice.held_back:
        mark = "  <- chosen" if row["tau"] == choice.tau else ""
        print(f"{row['tau']:4.2f}  {100 * row['top1']:14.2f}%  {100 * row['macro_recall']:11.2f}%{mark}")
    print(report.format_table())
    print(f"\nwrote {args.output} (tau {choice.tau}) and {args.output.with_suffix('.json')}")


def _add_lineage(sub: argparse._SubParsersAction, settings: WorkerSettings) -> None:
    from compression_worker.training.run import DataConfig

    p = sub.add_parser("lineage", help="the lineage store: list it, or add a model as a teacher jobs can start from")
    p.add_argument("action", choices=["list", "add"], help="list the stored artefacts, or add --model")
    p.add_argument("--dir", type=Path, default=settings.runs_dir / "lineage",
                   help="the lineage folder (default: %(default)s, the worker service's lineage_dir)")
    p.add_argument("--model", type=Path, help="add: a checkpoint of any zoo architecture, or an exported .onnx")
    p.add_argument("--kind", default="teacher", choices=["teacher", "student"], help="add: what it is (default: teacher)")
    p.add_argument("--parent", default=None, help="add: sha256 of the model it learnt from")
    add_dataclass_arguments(p, DataConfig, defaults={"train_path": settings.train_data}, exclude=("test_path",))
    _add_threads(p, settings)
    p.set_defaults(func=_run_lineage)


def _run_lineage(args: argparse.Namespace) -> None:
    from edgefer.jobs.lineage import format_lineage

    store = LineageStore(args.dir)
    if args.action == "add":
        if args.model is None:
            raise ValueError("lineage add needs --model")
        artefact = _add_to_lineage(store, args)
        print(f"stored {args.model} as {artefact.kind} {artefact.sha256[:12]} ({artefact.arch}, held back "
              f"{100 * artefact.held_back_accuracy:.2f}%) in {args.dir}")
    records = store.records()
    print(format_lineage(sorted(records, key=lambda a: a.created, reverse=True)) if records else f"{args.dir}: empty")


def _add_to_lineage(store: LineageStore, args: argparse.Namespace) -> Artefact:
    """Measure the model on the held-back faces of its data (the split every job of that data uses) and keep it."""
    import torch

    from compression_worker.distill.teachers import TorchTeacher, load_teacher, teacher_report
    from compression_worker.model.zoo import arch_of
    from compression_worker.training.run import DataConfig, load_splits

    torch.set_num_threads(args.threads)
    data = dataclass_from_namespace(DataConfig, args, test_path=None)
    held_back = load_splits(data).val
    teacher = load_teacher(args.model, torch.device("cpu"), args.threads)
    accuracy = teacher_report(teacher, held_back, torch.device("cpu")).accuracy
    arch = arch_of(teacher.model) if isinstance(teacher, TorchTeacher) else "onnx"
    return store.add(args.model, kind=args.kind, arch=arch, data=data.identity(), split=data.split_rule(),
                     held_back_accuracy=accuracy, parent=args.parent)


def build_parser(settings: WorkerSettings | None = None) -> argparse.ArgumentParser:
    settings = settings or WorkerSettings.from_env()
    parser = argparse.ArgumentParser(prog="edgefer-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub, settings)
    _add_distill(sub, settings)
    _add_evaluate(sub, settings)
    _add_export(sub, settings)
    _add_prune(sub, settings)
    _add_quantize(sub, settings)
    _add_balance(sub, settings)
    _add_lineage(sub, settings)
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
