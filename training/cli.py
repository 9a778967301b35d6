"""`sae-train`: fetch the data, train, evaluate, and compare pretraining schemes."""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from models import DEVICE_CHOICES, CheckpointError, load_checkpoint, resolve_device, to_model_input
from models.graph import add_graph
from models.layout import GRAPH_FILE, checkpoint_versions, next_version_dir, read_card
from training.data import DATASETS, DataError, fetch, load_dataset, update_package_lists
from training.embed import FORMATS, SPLITS, split_embeddings, write_embeddings
from training.evaluate import evaluate
from training.recipes import RECIPES, recipe_for
from training.reference import add_reference
from training.report import write_plots
from training.schemes import SCHEMES
from training.settings import TrainingSettings
from training.train import TrainResult, train


def _datasets(choice: str) -> list[str]:
    return list(DATASETS) if choice == "all" else [choice]


def _percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def cmd_fetch(args: argparse.Namespace) -> int:
    for name in _datasets(args.dataset):
        try:
            fetch(name, args.data_dir)
        except DataError:
            if not args.apt_update:
                raise
            print(f"{name}: not found; updating apt's package lists and trying again")
            update_package_lists()
            fetch(name, args.data_dir)
    return 0


def _train_one(args: argparse.Namespace, name: str, scheme: str) -> TrainResult:
    data = load_dataset(name, args.data_dir)
    return train(
        data,
        scheme,
        recipe_for(args.recipe or "default", name),
        args.seed,
        resolve_device(args.device),
        finetune_epochs=args.epochs,
        pretrain_epochs=args.pretrain_epochs,
        dry_run=args.dry_run,
    )


def cmd_train(args: argparse.Namespace) -> int:
    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="sae-dry-run-")) if args.dry_run else args.artifacts_dir
    for name in _datasets(args.dataset):
        directory = out / name
        if args.if_missing:
            try:
                checkpoint = load_checkpoint(directory)
                if args.recipe is not None and checkpoint.card.recipe_name != args.recipe:
                    raise CheckpointError(
                        f"its newest version, {checkpoint.path.name}, was trained by recipe "
                        f"{checkpoint.card.recipe_name!r}, not {args.recipe!r}"
                    )
                print(f"{name}: checkpoint in {directory} is present and verified; not retraining")
                if checkpoint.card.graph is None:
                    add_graph(checkpoint.path)
                    print(f"{name}: exported its ONNX graph to {checkpoint.path / GRAPH_FILE}")
                if checkpoint.card.reference is None:
                    _add_reference(args, checkpoint.path)
                continue
            except CheckpointError as e:
                print(f"{name}: training ({e})")
        if not args.dry_run:
            fetch(name, args.data_dir)
        result = _train_one(args, name, args.pretrain)
        directory = next_version_dir(directory)  # a new version beside the others; none is overwritten
        result.save(directory)
        write_plots(directory, result.model, result.history, result.card, result.metrics, result.test_x, result.test_y)
        print(
            f"{name}: test accuracy {_percent(result.metrics['test_accuracy'])}, "
            f"reconstruction MSE {result.metrics['reconstruction_mse']:.5f}, "
            f"trained in {result.card.provenance['training_seconds']:.1f} s -> {directory}"
        )
        if result.card.calibration is not None:
            c = result.card.calibration
            print(
                f"{name}: temperature {c.temperature:.3f} from {c.validation_examples:,} validation images; test ECE "
                f"{_percent(c.test_ece_before)} -> {_percent(c.test_ece_after)}, NLL {c.test_nll_before:.4f} -> "
                f"{c.test_nll_after:.4f}"
            )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write model.onnx and the reference set into every checkpoint named (each version of a model's folder), or
    every one served, where it has none (or again with --force)."""
    folders = args.checkpoints or [args.artifacts_dir / name for name in _served(args.artifacts_dir)]
    if not folders:
        raise CheckpointError(f"no checkpoint in {args.artifacts_dir}; train one first or name checkpoint folders")
    for folder in folders:
        versions = checkpoint_versions(folder) or {0: folder}  # 0: a checkpoint named directly
        for directory in versions.values():
            card = read_card(directory)
            if card.graph is not None and card.reference is not None and not args.force:
                print(f"{directory}: has its graph and reference set; not exported again (--force does)")
                continue
            if card.graph is None or args.force:
                card = add_graph(directory)
                assert card.graph is not None
                print(f"{directory}: graph exported to {directory / card.graph.file} (sha256 {card.graph.sha256[:12]})")
            if card.reference is None or args.force:
                _add_reference(args, directory)
    return 0


def _add_reference(args: argparse.Namespace, directory: Path) -> None:
    dataset = read_card(directory).dataset
    if dataset not in DATASETS:
        print(f"{directory}: a model of {dataset!r}, whose data sae-train cannot fetch: no reference set written")
        return
    fetch(dataset, args.data_dir)
    card = add_reference(directory, load_dataset(dataset, args.data_dir), resolve_device(args.device))
    assert card.reference is not None
    r = card.reference
    print(
        f"{directory}: reference set of {r.size:,} training images written to {directory / r.file}; its "
        f"{r.vote_k}-NN vote: validation {_percent(r.vote_validation_accuracy)}, test {_percent(r.vote_test_accuracy)}"
    )


def cmd_embed(args: argparse.Namespace) -> int:
    """Write a checkpoint's embeddings of one split, with indices, labels, model name and version."""
    name, version, directory = _model_version(args.checkpoint or args.artifacts_dir / args.dataset)
    manifest, indices, labels, vectors = split_embeddings(
        directory, args.split, args.data_dir, resolve_device(args.device)
    )
    manifest = {"model": name, "version": version, **manifest}
    suffix = ".parquet" if args.format == "parquet" else ""
    out = args.out or Path("embeddings") / f"{name}-{version}-{args.split}{suffix}"
    written = write_embeddings(out, args.format, manifest, indices, labels, vectors)
    print(f"{name} version {version}: {len(indices):,} {args.split} embeddings ({vectors.shape[1]}-d) -> {written}")
    return 0


def _model_version(path: Path) -> tuple[str, int, Path]:
    """(model name, version, checkpoint folder) of one version's folder, or of a model's folder (its newest)."""
    if path.name.isdigit() and checkpoint_versions(path.parent).get(int(path.name)) == path:
        return path.parent.name, int(path.name), path
    versions = checkpoint_versions(path)
    if versions:
        return path.name, max(versions), versions[max(versions)]
    raise CheckpointError(f"{path} holds no checkpoint: name a model's folder or one of its version folders")


def _served(artifacts_dir: Path) -> list[str]:
    """The models a server of `artifacts_dir` finds: its folders that hold a checkpoint."""
    if not artifacts_dir.is_dir():
        return []
    return sorted(f.name for f in artifacts_dir.iterdir() if not f.name.startswith(".") and checkpoint_versions(f))


def cmd_evaluate(args: argparse.Namespace) -> int:
    checkpoint = load_checkpoint(args.checkpoint, resolve_device(args.device))
    card = checkpoint.card
    data = load_dataset(card.dataset, args.data_dir)
    x = to_model_input(data.test_images).to(resolve_device(args.device))
    metrics = evaluate(checkpoint.model, x, data.test_labels, card.class_names)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"{card.dataset} ({card.pretraining}, recipe {card.recipe_name}) from {args.checkpoint}")
    on_card = _percent(card.metrics.test_accuracy)
    print(f"  test accuracy       {_percent(metrics['test_accuracy'])} (card: {on_card})")
    print(f"  reconstruction MSE  {metrics['reconstruction_mse']:.5f}")
    percentiles = ", ".join(f"{k} {v:.5f}" for k, v in metrics["reconstruction_error_percentiles"].items())
    print(f"  per-image error     {percentiles}")
    for cls, acc in metrics["per_class_accuracy"].items():
        print(f"  {cls:>12}  {_percent(acc)}")
    return 0


def _mean_sd(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def cmd_ablation(args: argparse.Namespace) -> int:
    """Every data set x recipe x scheme, over each seed; a row each with the mean ± standard deviation."""
    args.recipes = args.recipes or [args.recipe or "default"]
    args.seeds = args.seeds or [args.seed]
    rows = []
    for name in _datasets(args.dataset):
        if not args.dry_run:
            fetch(name, args.data_dir)
        for recipe in args.recipes:
            for scheme in args.schemes:
                results = []
                for seed in args.seeds:
                    result = _train_one(
                        argparse.Namespace(**{**vars(args), "recipe": recipe, "seed": seed}), name, scheme
                    )
                    results.append(result)
                    if args.out is not None:
                        result.save(args.out / name / f"{recipe}-{scheme}-seed{seed}")
                rows.append((name, recipe, scheme, results))
    seeds = ", ".join(map(str, args.seeds))
    print(f"\nmean ± standard deviation over seeds {seeds}:\n")
    print(
        "| data set | recipe | pretraining | test accuracy (%) | test ECE before / after temperature (%) "
        "| reconstruction MSE | training seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, recipe, scheme, results in rows:
        accuracy = _mean_sd([r.metrics["test_accuracy"] for r in results])
        calibrations = [r.card.calibration for r in results if r.card.calibration is not None]
        before = _mean_sd([c.test_ece_before for c in calibrations]) if calibrations else "-"
        after = _mean_sd([c.test_ece_after for c in calibrations]) if calibrations else "-"
        ece = f"{before} / {after}"
        mse = _mean_sd([r.metrics["reconstruction_mse"] for r in results], scale=1.0, digits=5)
        seconds = _mean_sd([r.card.provenance["training_seconds"] for r in results], scale=1.0, digits=1)
        print(f"| {name} | {recipe} | {scheme} | {accuracy} | {ece} | {mse} | {seconds} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    settings = TrainingSettings()  # the environment's defaults, read once for the whole command
    parser = argparse.ArgumentParser(prog="sae-train", description=__doc__)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=settings.data_dir,
        help="where the data sets live (default: $SAE_DATA_DIR or ./data)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="get and verify the data sets")
    p.add_argument("--dataset", choices=[*DATASETS, "all"], default="all", help="which data set (default: all)")
    p.add_argument(
        "--apt-update",
        action="store_true",
        help="when a data set cannot be had, run `apt-get update` (needs root) and try again, "
        "so that apt-get knows the Debian package of Fashion-MNIST",
    )
    p.set_defaults(func=cmd_fetch)

    def training_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--recipe", choices=list(RECIPES), default=None, help="training recipe (default: default)")
        p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the recipe's)")
        p.add_argument(
            "--pretrain-epochs", type=int, default=None, help="epochs per pretraining stage (default: the recipe's)"
        )
        p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
        p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA when available (default)")
        p.add_argument(
            "--dry-run", action="store_true", help="two batches a stage and 1,000 test images, to check the pipeline"
        )

    p = sub.add_parser("train", help="train and save each model as its next version: OUT/<dataset>/<version>/")
    p.add_argument("--dataset", choices=[*DATASETS, "all"], default="all", help="which data set (default: all)")
    p.add_argument("--pretrain", choices=SCHEMES, default="greedy", help="pretraining scheme (default: greedy)")
    training_flags(p)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="artifacts folder (default: $SAE_ARTIFACTS_DIR or ./artifacts; a temporary one for --dry-run)",
    )
    p.add_argument(
        "--if-missing",
        action="store_true",
        help="skip data sets whose newest version is present and verifies (and, with --recipe, was trained by it)",
    )
    # Without --out: the folder `sae-serve` loads from, read from the same variable.
    p.set_defaults(func=cmd_train, artifacts_dir=settings.artifacts_dir)

    p = sub.add_parser(
        "export",
        help="add the ONNX graph (model.onnx, for ONNX Runtime) and the reference set (reference.safetensors, for "
        "/similar) to checkpoints written without them",
    )
    p.add_argument(
        "checkpoints",
        type=Path,
        nargs="*",
        help="checkpoint folders, or models' folders (each of their versions); default: every model in the "
        "artifacts folder",
    )
    p.add_argument(
        "--artifacts-dir",
        type=Path,
        default=settings.artifacts_dir,
        help="where the models are (default: $SAE_ARTIFACTS_DIR or ./artifacts)",
    )
    p.add_argument("--force", action="store_true", help="export both again where a checkpoint has them")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA when available (default)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "embed", help="write a checkpoint's embeddings of a split (Parquet or .npy) for vector databases"
    )
    p.add_argument(
        "--dataset", choices=list(DATASETS), default="mnist", help="the model ARTIFACTS_DIR/<dataset> (default: mnist)"
    )
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="a model's folder or one version's (default: --dataset's)"
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="reference",
        help="reference: the training images /similar searches (default); train: all 60,000; test",
    )
    p.add_argument("--format", choices=FORMATS, default="parquet", help="parquet (default) or npy (a folder)")
    p.add_argument("--out", type=Path, default=None, help="default: embeddings/<model>-<version>-<split>[.parquet]")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA when available (default)")
    p.set_defaults(func=cmd_embed, artifacts_dir=settings.artifacts_dir)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on its data set's test split")
    p.add_argument(
        "checkpoint",
        type=Path,
        help="checkpoint folder, e.g. artifacts/mnist/2; a model's folder (artifacts/mnist) means its newest version",
    )
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA when available (default)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("ablation", help="train each recipe and pretraining scheme over several seeds and print a table")
    p.add_argument("--dataset", choices=[*DATASETS, "all"], default="all", help="which data set (default: all)")
    p.add_argument(
        "--schemes", nargs="+", choices=SCHEMES, default=list(SCHEMES), help="schemes to compare (default: all)"
    )
    training_flags(p)
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=None, help="recipes (default: --recipe)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds to average over (default: --seed)")
    p.add_argument(
        "--out", type=Path, default=None, help="also save each checkpoint under OUT/<dataset>/<recipe>-<scheme>-seed<S>"
    )
    p.set_defaults(func=cmd_ablation)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DataError, CheckpointError, ValueError) as e:
        print(f"sae-train: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
