"""The ``fcmbench`` command line."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fcmbench.core import failpoints, registry
from fcmbench.core.errors import FcmbenchError
from fcmbench.datasets.options import MAX_IMAGE_PIXELS, DatasetOptions

console = Console(stderr=True)
if not console.is_terminal:
    console = Console(stderr=True, width=160)
# compressai's import triggers torch's deprecation notice for torch.jit.script: not the user's concern
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)


def stdout_console() -> Console:
    """Tables stay readable when piped (rich would otherwise wrap them at 80 columns)."""
    plain = Console()
    return plain if plain.is_terminal else Console(width=160)


def share(text: str) -> float:
    """A share of the uncompressed accuracy, in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1 (e.g. 0.8)")
    return value


class RecordingParser(argparse.ArgumentParser):
    """Keeps the actions it was given, so an experiment file can be checked against the options it stands for."""

    def __init__(self, *args, **kwargs) -> None:
        self.options: dict[str, argparse.Action] = {}  # before the parser adds its own --help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.option_strings:
            self.options[action.dest] = action
        return action


def build_parser(run_defaults: dict | None = None) -> argparse.ArgumentParser:
    """``run_defaults``: the run options an experiment file sets (flags given on the command line override them)."""
    parser = argparse.ArgumentParser(prog="fcmbench", description="Benchmark feature coding for machines.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=RecordingParser)

    commands.add_parser("list", help="methods with their rate points, task models, datasets")

    run = commands.add_parser("run", help="evaluate methods x rate points on a dataset")
    run.add_argument("--config", type=Path, metavar="EXPERIMENT.toml",
                     help="an experiment file: any option of run as `key = value` (e.g. methods = [\"lmsfc\", "
                     "\"raw\"], limit = 50, executor = \"dask\"); flags given here override it")
    run.add_argument("--methods", help="comma-separated method names, or 'all' (required, here or in --config)")
    run.add_argument("--dataset", help="dataset name (see `fcmbench list`) (required, here or in --config)")
    run.add_argument("--out", type=Path, help="results folder (created; reused to resume) (required, here or in "
                     "--config)")
    run.add_argument("--task-model", help="task model name (default: the dataset's own, else faster_rcnn_r50_fpn)")
    run.add_argument("--weights", help="local weights file, or 'none' for random weights (default: the model's)")
    run.add_argument("--rates", help="comma-separated rate point labels to run (default: all of each method)")
    run.add_argument("--limit", type=int, help="use only the first N images")
    run.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    run.add_argument("--checkpoints", type=Path, help="folder of learned-codec checkpoints")
    run.add_argument("--cache", type=Path, help="cache folder for features and generated data "
                     "(default: $FCMBENCH_CACHE or ~/.cache/fcmbench)")
    run.add_argument("--vtm-dir", type=Path, help="VTM build for the VVC anchors (else $FCMBENCH_VTM_DIR, else "
                     "the built-in VVenC)")
    run.add_argument("--vvenc-preset", default="medium", choices=["faster", "fast", "medium", "slow", "slower"],
                     help="preset of the built-in VVenC (medium is its default; faster: ~15x quicker, ~2%% more bits)")
    run.add_argument("--jobs", type=int, default=2, help="concurrent external encoder processes (VVC anchors)")
    run.add_argument("--redo", help="comma-separated methods whose results already in --out are recomputed "
                     "(e.g. after retraining their checkpoints)")
    run.add_argument("--workers", type=int, default=1,
                     help="processes working on different images at once (one torch thread each)")
    run.add_argument("--batch-size", type=int,
                     help="images per batch through the task network's front and back (grouped by size; the "
                     "results are the same for any batch size; default 4 on a GPU, 1 on the CPU)")
    run.add_argument("--executor", choices=["local", "dask"], default="local",
                     help="local: --workers processes on this machine; dask: (image, method) units on a Dask "
                     "cluster (a LocalCluster of --workers single-threaded workers, or --scheduler)")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (with --executor dask)")
    run.add_argument("--no-reference", action="store_true",
                     help="do not add the uncompressed reference (raw) when --methods leaves it out; the report "
                     "then cannot say whether a BD-rate's accuracy range is meaningful")
    run.add_argument("--no-wait", action="store_true",
                     help="refuse (naming it) instead of waiting when another run holds --out")
    run.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS,
                     help=f"refuse larger images before decoding them (default {MAX_IMAGE_PIXELS}, a 4K frame)")
    run.add_argument("--data-root", type=Path, help="dataset root (COCO: holds val2017/ and annotations/)")
    run.add_argument("--split", help="dataset split (COCO: val2017; shapes: val or train)")
    run.add_argument("--images", type=Path, help="image folder (with --annotations)")
    run.add_argument("--annotations", type=Path, help="COCO-format annotation JSON (with --images)")
    add_kitti_options(run)
    run.set_defaults(**(run_defaults or {}))
    parser.run_options = run.options  # what an experiment file may set

    report = commands.add_parser("report", help="RD points and BD-rates of one or more runs")
    report.add_argument("--out", required=True, type=Path, help="where rd.csv and bd_rate.csv go")
    report.add_argument("runs", nargs="*", type=Path,
                        help="results folders to combine, or rd.csv tables an earlier report wrote (a method a "
                             "folder holds replaces all of its points in them) (default: --out)")
    report.add_argument("--anchor", help="method the BD-rates are measured against")
    report.add_argument("--bd-method", default="pchip", choices=["pchip", "cubic"])
    report.add_argument("--monotone", action="store_true",
                        help="for BD-rates, drop points that do not beat every cheaper point (listed in the note)")
    report.add_argument("--meaningful-from", type=share, default=0.8, metavar="SHARE",
                        help="a BD-rate whose accuracy overlap stays below this share of the uncompressed (raw) "
                             "accuracy is marked 'low-accuracy regime' (default 0.8)")
    report.add_argument("--facet", choices=["none", "family"], default="none",
                        help="family: one RD panel per method family (L-MSFC, ELIC, LIC-TCM, others), each with "
                        "the anchors")
    report.add_argument("--bootstrap", type=int, default=200, metavar="N",
                        help="resamples of the seeded paired bootstrap over images behind every 95%% interval "
                             "(default 200; 0 turns intervals off)")

    train = commands.add_parser("train", help="train a learned codec (feature or image) or MFIBA's predictor")
    train.add_argument("method", help="a trainable method (its codec names its trainer; `fcmbench list` shows "
                       "every method)")
    train.add_argument("--quality", type=int, choices=range(1, 7), metavar="1..6",
                       help="the quality to train (all but mfiba-*, which train the importance predictor)")
    train.add_argument("--task-model", help="whose features (every method but the image codecs elic and tcm)")
    train.add_argument("--dataset", help="its train split gives the features, val the validation")
    train.add_argument("--image-folder", type=Path,
                       help="train on a folder of unlabelled images instead (its last 16 validate)")
    train.add_argument("--data-root", type=Path, help="dataset root (as for run; shapes: its cache by default)")
    train.add_argument("--split-file", type=Path, help="KITTI: training frame ids, one a line")
    train.add_argument("--val-split-file", type=Path, help="KITTI: validation frame ids (the first 16 are used)")
    train.add_argument("--no-task-loss", action="store_true",
                       help="tamsf only: rate-distortion loss alone (task networks without gradients, e.g. ONNX)")
    train.add_argument("--weights", help="task model weights (as for run)")
    train.add_argument("--steps", type=int, default=2000)
    train.add_argument("--latent", type=int, help="latent width M (default: the reference width for the quality)")
    train.add_argument("--width", type=int, help="elic, tcm and their -feat codecs: main width N (default: reference)")
    train.add_argument("--images", type=int, help="use only the first N training images")
    train.add_argument("--batch-size", type=int, default=8, help="images per step (among images of equal size)")
    train.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (halved on plateau)")
    train.add_argument("--lmbda", type=float, help="rate-distortion λ (default: the reference λ of the quality)")
    train.add_argument("--init", type=Path, help="start from this checkpoint's weights (e.g. the next quality)")
    train.add_argument("--threads", type=int, help="CPU threads for torch (fix it to reproduce a checkpoint)")
    train.add_argument("--int8-weights", action="store_true",
                       help="store convolution kernels as int8, xz-compressed (5x smaller; the shipped checkpoints)")
    train.add_argument("--out", type=Path, help="checkpoint root (default: $FCMBENCH_CHECKPOINTS or the package's)")
    train.add_argument("--cache", type=Path, help="feature cache folder (as for run)")
    train.add_argument("--ladder", metavar="\"Q:λ ...\"",
                       help="train every quality of this ladder in one command, e.g. \"1:0.0125 2:0.025 3:0.125\": a "
                       "base network at --base-quality, then each quality fine-tuned from its neighbour (--steps, "
                       "--lr each); resumable, a quality whose checkpoint exists is kept")
    train.add_argument("--base-quality", type=int, help="with --ladder: the quality the base network is trained "
                       "at (default: the highest); it goes to OUT/base/")
    train.add_argument("--base-steps", type=int, help="with --ladder: the base network's steps (default --steps)")
    train.add_argument("--base-lr", type=float, help="with --ladder: the base network's learning rate (default --lr)")

    fit = commands.add_parser("fit-rate-model", help="MFIBA: per-level task loss against rate, D = a·R^b fitted "
                              "per level, and the importance predictor's labels")
    fit.add_argument("method", help="an MFIBA method: mfiba-elic or mfiba-tcm (or a plugin's)")
    fit.add_argument("--task-model", required=True)
    fit.add_argument("--dataset", help="its train split is measured against its ground truth")
    fit.add_argument("--image-folder", type=Path, help="measure unlabelled images instead, against the task "
                     "model's own uncompressed detections (its last 16 are left for the predictor's validation)")
    fit.add_argument("--pseudo-score", type=float, default=0.5,
                     help="with --image-folder: the detection score that makes an uncompressed detection ground "
                     "truth (default 0.5)")
    fit.add_argument("--images", type=int, default=40, help="how many training images to measure")
    fit.add_argument("--weights", help="task model weights (as for run)")
    fit.add_argument("--out", type=Path, help="checkpoint root: base checkpoints are read and the model written "
                     "there (default: $FCMBENCH_CHECKPOINTS or the package's)")
    fit.add_argument("--cache", type=Path, help="feature cache folder (as for run)")
    fit.add_argument("--threads", type=int, help="CPU threads for torch")

    evaluate = commands.add_parser("evaluate", help="score detection files the way a dataset's official tool does")
    evaluate.add_argument("benchmark", choices=["kitti"], help="kitti: the devkit's 2D AP|R40 and AP|R11")
    evaluate.add_argument("--labels", required=True, type=Path, help="folder of KITTI label_2 files (ground truth)")
    evaluate.add_argument("--detections", required=True, type=Path,
                          help="folder of KITTI-format detection files of the same names (score as 16th field)")
    evaluate.add_argument("--split-file", type=Path, help="frame ids to evaluate, one a line (default: every label)")
    evaluate.add_argument("--json", type=Path, help="also write the APs (0-100) to this JSON file")

    datasets = commands.add_parser("datasets", help="check a downloaded dataset")
    dataset_commands = datasets.add_subparsers(dest="datasets_command", required=True)
    check = dataset_commands.add_parser("check", help="layout and file counts of a downloaded COCO or KITTI; exit "
                                        "2 with what is missing")
    check.add_argument("dataset", choices=["coco", "kitti"])
    check.add_argument("--root", required=True, type=Path, help="the folder given as --data-root to run")

    train_task = commands.add_parser("train-task", help="train the embedded default's detector (shapes_rcnn), or "
                                     "fine-tune a torchvision R-CNN on a dataset (e.g. --dataset kitti)")
    train_task.add_argument("--out", type=Path, help="weights file to write (default for shapes_rcnn: "
                            "fcmbench/weights/shapes_rcnn.pt)")
    train_task.add_argument("--dataset", default="shapes", help="shapes (default), kitti or coco")
    train_task.add_argument("--task-model", help=f"shapes_rcnn (shapes), else one of {', '.join(FINETUNABLE)} "
                            "(default faster_rcnn_r50_fpn)")
    train_task.add_argument("--weights", help="starting weights of the fine-tuned model: torchvision's COCO weights "
                            "(default), a local file, or none")
    train_task.add_argument("--data-root", type=Path, help="dataset root (as for run)")
    train_task.add_argument("--images", type=Path, help="image folder (with --labels or --annotations)")
    train_task.add_argument("--annotations", type=Path, help="COCO-format annotation JSON (with --images)")
    add_kitti_options(train_task)
    train_task.add_argument("--val-split-file", type=Path, help="KITTI: frame ids to evaluate the result on")
    train_task.add_argument("--val-images", type=int, help="evaluate on only the first N validation images")
    train_task.add_argument("--epochs", type=int, default=10)
    train_task.add_argument("--batch-size", type=int, default=4)
    train_task.add_argument("--lr", type=float, help="SGD learning rate (default 0.02 from scratch, 0.005 "
                            "fine-tuning)")
    train_task.add_argument("--device", default="auto", help="auto (CUDA if available; shapes_rcnn: the CPU), cpu, "
                            "cuda or cuda:N")
    train_task.add_argument("--seed", type=int, default=0)
    train_task.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    return parser


def add_kitti_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", type=Path, help="KITTI: label_2 folder (with --images)")
    parser.add_argument("--split-file", type=Path, help="KITTI: frame ids to use, one a line (default: every image)")
    parser.add_argument("--class-map", help="KITTI: task-model categories that are Car, Pedestrian, Cyclist: coco "
                        "(default: COCO car 3, person 1, bicycle 2; also what train-task --dataset kitti makes) or "
                        "ID=Class,...")


def cmd_list(args: argparse.Namespace) -> None:
    out = stdout_console()
    table = Table(title="methods")
    table.add_column("name")
    table.add_column("kind")
    table.add_column("rate points")
    for name in registry.methods.names():
        try:
            codec = registry.methods.get(name)
            table.add_row(name, codec.kind, " ".join(p.label for p in codec.rate_points()))
        except FcmbenchError as err:
            table.add_row(name, "?", f"[red]{err}[/red]")
    out.print(table)
    out.print("task models: " + ", ".join(registry.task_models.names()))
    out.print("datasets:    " + ", ".join(registry.datasets.names()))


def resolved_configuration(args: argparse.Namespace) -> dict:
    """Every run option as this run used it (flags over the experiment file over defaults), for its provenance."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in sorted(vars(args).items())
            if key not in ("command",)}


def cmd_run(args: argparse.Namespace) -> None:
    missing = [f"--{name}" for name in ("methods", "dataset", "out") if getattr(args, name) is None]
    if missing:
        raise FcmbenchError(f"run needs {', '.join(missing)}: give {'them' if len(missing) > 1 else 'it'} on the "
                            "command line or in the experiment file (--config)")
    if args.workers < 1:
        raise FcmbenchError(f"--workers {args.workers}: give 1 or more worker processes")
    if args.batch_size is not None and args.batch_size < 1:
        raise FcmbenchError(f"--batch-size {args.batch_size}: give 1 or more images per batch")
    if args.scheduler and args.executor != "dask":
        raise FcmbenchError(f"--scheduler {args.scheduler} is a Dask scheduler: add --executor dask")
    if args.max_image_pixels < 1:
        raise FcmbenchError(f"--max-image-pixels {args.max_image_pixels}: give a positive number of pixels")
    from fcmbench.core.folderlock import FolderLock
    from fcmbench.core.paths import default_cache, writable_folder
    from fcmbench.pipeline.runner import RunConfig, Runner
    from fcmbench.pipeline.store import Store

    # both folders are checked before anything is computed or written into either
    writable_folder(args.cache or default_cache(), "--cache" if args.cache else "the cache folder ($FCMBENCH_CACHE)")
    writable_folder(args.out, "--out", create=False)  # created with the store, once the run is set up

    config = RunConfig(
        methods=registry.methods.resolve(args.methods), dataset=args.dataset, out=args.out,
        task_model=args.task_model, weights=args.weights,
        rates=[r.strip() for r in args.rates.split(",")] if args.rates else None,
        limit=args.limit, device=args.device, checkpoints=args.checkpoints, cache=args.cache,
        dataset_options=DatasetOptions(args.data_root, args.images, args.annotations, args.split, args.labels,
                                       args.split_file, args.class_map),
        command=shlex.join(["fcmbench", *sys.argv[1:]]), configuration=resolved_configuration(args),
        skip_unready=args.methods.strip() == "all", workers=args.workers, executor=args.executor,
        scheduler=args.scheduler, reference=not args.no_reference, batch_size=args.batch_size,
        redo=registry.methods.resolve(args.redo) if args.redo else [], max_image_pixels=args.max_image_pixels,
        codec_extra={"jobs": args.jobs, "vvenc_preset": args.vvenc_preset,
                     **({"vtm_dir": str(args.vtm_dir)} if args.vtm_dir else {})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random-weights warning goes to the report instead
        runner = Runner(config, console)
    for name, reason in runner.skipped.items():
        console.print(f"[yellow]skipping {name}:[/] {reason}", highlight=False, soft_wrap=True)
    for name, codec in runner.codecs.items():
        console.print(f"{name}: {codec.describe()}", highlight=False)
    if runner.added_reference:
        console.print("raw added: the uncompressed reference that every BD-rate's accuracy range is judged against "
                      "(--no-reference leaves it out)", highlight=False)
    for note in runner.task.warnings:
        console.print(f"[bold yellow]warning:[/] {note}")
    with FolderLock(args.out, wait=not args.no_wait,
                    say=lambda message: console.print(message, highlight=False, soft_wrap=True)):
        store = Store(args.out)
        try:
            computed = runner.run(store)
        finally:
            store.close()
    console.print(f"{computed} item(s) computed, results in {args.out}; next: fcmbench report --out {args.out}")


def installed_bases(methods: list[str]) -> dict[str, str]:
    """For points from published tables, which record no pairing: the installed codec's ``anchor``, if any
    (runs record theirs, which wins)."""
    pairs = {}
    for name in methods:
        try:
            base = getattr(registry.methods.get(name), "anchor", None)
        except FcmbenchError:  # a plugin no longer installed: no pairing, not an error
            continue
        if base is not None:
            pairs[name] = base.name
    return pairs


def unrecorded(rd, history: list[dict]) -> list[str]:
    """Methods no run recorded a pairing for: points from published tables, or runs of older versions."""
    recorded = {name for run in history if "built_on" in run for name in run["methods"]}
    return sorted(set(rd["method"]) - recorded)


def cmd_report(args: argparse.Namespace) -> None:
    from fcmbench.core.paths import writable_folder
    from fcmbench.reports.html import render_report
    from fcmbench.reports.intervals import point_resamples, with_accuracy_intervals, with_bd_intervals
    from fcmbench.reports.tables import (
        bd_table,
        choose_anchor,
        level_table,
        own_anchors,
        print_tables,
        provenance,
        rd_table,
        write_tables,
    )

    runs = args.runs or [args.out]
    if args.bootstrap < 0:
        raise FcmbenchError(f"--bootstrap {args.bootstrap}: give a number of resamples >= 0 (0 turns intervals off)")
    rd = rd_table(runs)
    samples = point_resamples(runs, args.bootstrap) if args.bootstrap else {}
    rd = with_accuracy_intervals(rd, samples)
    anchor = choose_anchor(rd, args.anchor)
    history = provenance(runs)
    bd = bd_table(rd, anchor, args.bd_method, monotone=args.monotone,
                  own_anchors={**installed_bases(unrecorded(rd, history)), **own_anchors(history)},
                  meaningful_from=args.meaningful_from) if anchor else None
    if bd is not None:
        bd = with_bd_intervals(bd, rd, samples, args.bd_method, args.monotone)
    levels = level_table(runs, rd)
    # written into a staging folder and moved into place at the end: a failure leaves no half report
    writable_folder(args.out, "--out")
    with tempfile.TemporaryDirectory(prefix=".report-", dir=args.out) as staging:
        staging = Path(staging)
        written = write_tables(rd, bd, staging, anchor)
        levels.drop(columns="setup").to_csv(staging / "levels.csv", index=False)
        written.append(staging / "levels.csv")
        page = render_report(rd, bd, levels, history, anchor, args.bd_method, staging, args.meaningful_from,
                             facet=args.facet == "family")
        failpoints.reached("report-write")
        for path in [*written, page]:
            path.replace(args.out / path.name)
    written, page = [args.out / p.name for p in written], args.out / page.name
    out = stdout_console()
    for note in sorted({w for run in history for w in run.get("warnings", [])}):
        out.print(f"[bold yellow]warning:[/] {note}")
    print_tables(rd, bd, out)
    if anchor is None:
        out.print("no BD-rate: no anchor given (--anchor NAME) and none of vtm-feature, vtm-image, quant was run")
    elif bd.empty:
        out.print(f"no BD-rate: no method besides the anchor {anchor} and the uncompressed reference raw")
    out.print(f"wrote {', '.join(p.name for p in written)} in {args.out}")
    out.print(f"report: {page.resolve()}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    import json

    from fcmbench.evaluation.kitti import LEVELS, evaluate_folders

    result = evaluate_folders(args.labels, args.detections, args.split_file)
    table = Table(title=f"KITTI 2D detection ({args.detections})")
    table.add_column("class")
    for points in ("AP|R40", "AP|R11"):
        for level in LEVELS:
            table.add_column(f"{points} {level}", justify="right")
    for cls in result.ap40:
        table.add_row(cls, *[f"{result.ap40[cls][lv]:.6f}" for lv in LEVELS],  # %f, as the devkit prints
                      *[f"{result.ap11[cls][lv]:.6f}" for lv in LEVELS])
    stdout_console().print(table)
    if args.json:
        try:
            args.json.write_text(json.dumps(result.as_json(), indent=2) + "\n")
        except OSError as err:
            raise FcmbenchError(f"cannot write --json {args.json}: {err.strerror}") from None


def cmd_datasets(args: argparse.Namespace) -> None:
    from fcmbench.datasets.check import CHECKERS, problems

    if not args.root.is_dir():
        raise FcmbenchError(f"--root {args.root} is not a folder; give the folder you downloaded {args.dataset} into")
    checks = CHECKERS[args.dataset](args.root)
    table = Table(title=f"{args.dataset} in {args.root}")
    for column in ("what", "expected", "found", ""):
        table.add_column(column)
    for c in checks:
        table.add_row(c.what, c.expected, c.found, "[green]ok[/]" if c.ok else "[red]missing[/]")
    stdout_console().print(table)
    wrong = problems(checks)
    if wrong:
        raise FcmbenchError(f"{args.dataset} in {args.root} is incomplete: {wrong}")
    stdout_console().print(f"{args.dataset} in {args.root} is complete: fcmbench run --dataset {args.dataset} "
                           f"--data-root {args.root} ...")


def cmd_train_task(args: argparse.Namespace) -> None:
    from fcmbench.training.detector import train_task

    if args.dataset == "shapes" and args.task_model in (None, "shapes_rcnn"):
        from fcmbench.pipeline.runner import pick_device

        out = args.out or Path("fcmbench/weights/shapes_rcnn.pt")
        # the shipped weights are reproduced on the CPU: a GPU only when asked for by name
        device = "cpu" if args.device == "auto" else pick_device(args.device)
        score = train_task(out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr or 0.02,
                           seed=args.seed, threads=args.threads, device=device)
        Console().print(f"saved {out}; val box mAP@[.5:.95] = {score:.4f}")
        return
    finetune_task_model(args)


def finetune_task_model(args: argparse.Namespace) -> None:
    """A torchvision R-CNN fine-tuned on ``--dataset``'s boxes, then evaluated on ``--val-split-file``."""
    from fcmbench.pipeline.runner import pick_device
    from fcmbench.tasks.base import TaskModelOptions
    from fcmbench.training.detector import evaluate_detector, finetune_model, train_task

    task_model = args.task_model or "faster_rcnn_r50_fpn"
    if task_model not in FINETUNABLE:
        raise FcmbenchError(f"train-task fine-tunes {', '.join(FINETUNABLE)} on --dataset {args.dataset}, not "
                            f"{task_model} (shapes_rcnn trains on shapes only)")
    if args.out is None:
        raise FcmbenchError("give --out FILE for the fine-tuned weights (then run with --task-model "
                            f"{task_model} --weights FILE)")
    device = pick_device(args.device)
    build = registry.datasets.get(args.dataset)

    def options(split_file: Path | None) -> DatasetOptions:
        return DatasetOptions(args.data_root, args.images, args.annotations, None, args.labels, split_file,
                              args.class_map)

    train = build(options(args.split_file))
    classes = max(c["id"] for c in train.coco.dataset["categories"])
    train_task(args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr or 0.005, seed=args.seed,
               threads=args.threads, train=train, evaluate=False, device=device, label=task_model,
               build_model=lambda: finetune_model(task_model, args.weights, classes))
    out = stdout_console()
    out.print(f"saved {args.out}; use it with --task-model {task_model} --weights {args.out}")
    if args.val_split_file:
        task = registry.task_models.get(task_model)(TaskModelOptions(str(args.out), device))
        metrics = evaluate_detector(task, build(options(args.val_split_file)), args.val_images)
        shown = {k: v for k, v in metrics.items() if k in ("bbox_mAP", "bbox_mAP50", "kitti_mod_AP40")
                 or k.endswith("_mod_AP40")}
        out.print("validation: " + ", ".join(f"{k} = {v:.4f}" for k, v in shown.items()))


FINETUNABLE = ("faster_rcnn_r50_fpn", "faster_rcnn_r50_fpn_v2")  # as fcmbench.training.detector (not imported here)


def check_output_folders(args: argparse.Namespace) -> None:
    """train and fit-rate-model write checkpoints under --out and features under --cache: check both first."""
    from fcmbench.core.paths import writable_folder

    for option in ("out", "cache"):
        if getattr(args, option, None) is not None:
            writable_folder(getattr(args, option), f"--{option}", create=False)


def cmd_train(args: argparse.Namespace) -> None:
    """Dispatch to the trainer the codec names (``Codec.trainer``): built-ins and plugins alike."""
    from pkgutil import resolve_name

    import torch

    from fcmbench.core.training import TrainRequest

    check_output_folders(args)
    codec = registry.methods.get(args.method)
    if not getattr(codec, "trainer", None):
        raise FcmbenchError(f"{args.method} has no trainer; trainable methods: {', '.join(trainable_methods())}")
    if args.threads:
        torch.set_num_threads(args.threads)
    request = TrainRequest.from_options(args)
    if args.ladder:
        from fcmbench.training.ladder import parse_ladder, train_ladder

        if not hasattr(codec, "checkpoint"):
            raise FcmbenchError(f"{args.method} has no ladder of qualities: train it without --ladder")
        ladder = parse_ladder(args.ladder)
        trained = train_ladder(request, ladder, args.base_quality or max(ladder), args.base_steps or args.steps,
                               args.base_lr, Console().print)
    else:
        trained = [resolve_name(codec.trainer)(request)]
    for one in trained:
        Console().print(f"saved {one.path}" + (f" ({one.detail})" if one.detail else ""))


def trainable_methods() -> list[str]:
    found = []
    for name in registry.methods.resolve("all"):
        try:
            if getattr(registry.methods.get(name), "trainer", None):
                found.append(name)
        except FcmbenchError:  # a broken plugin is not trainable
            continue
    return found


def cmd_fit_rate_model(args: argparse.Namespace) -> None:
    import json

    import torch

    check_output_folders(args)

    from fcmbench.codecs.learned.mfiba import fit_rate_model, fitted_codec
    from fcmbench.core.codec import CodecOptions
    from fcmbench.core.paths import default_cache
    from fcmbench.core.training import TrainRequest
    from fcmbench.datasets.pseudo import PseudoLabelled
    from fcmbench.pipeline.runner import ImageWork
    from fcmbench.training.data import task_model_of, training_images

    if args.threads:
        torch.set_num_threads(args.threads)
    request = TrainRequest.from_options(args)
    task = task_model_of(request)
    codec = fitted_codec(args.method, CodecOptions(task_model=task.name, checkpoints=args.out))
    codec.fit_qualities()
    dataset, items, _ = training_images(request)
    cache = (args.cache or default_cache()) / "features"
    features = {item.image_id: ImageWork(item, task, cache).features() for item in items}
    if dataset is None:
        dataset = PseudoLabelled(items, task, features, args.pseudo_score)
    model, labels = fit_rate_model(codec, dataset, task, features)
    folder = codec.folder()
    model.save(folder / "rate_model.json")
    (folder / "labels.json").write_text(json.dumps({str(k): v for k, v in labels.items()}))
    table = Table(title=f"{codec.name}: task loss (mAP points) = a·R^b per level, R in bits per mosaic pixel")
    for column in ("level", "a", "b"):
        table.add_column(column)
    for name, a, b in zip(model.levels, model.a, model.b, strict=True):
        table.add_row(name, f"{a:.4g}", f"{b:.4g}")
    out = stdout_console()
    out.print(table)
    out.print(f"{len(labels)} labelled images; default λ: {', '.join(f'{lam:.4g}' for lam in model.lambdas)}")
    source = f"--image-folder {args.image_folder}" if args.image_folder else f"--dataset {args.dataset}"
    out.print(f"wrote {folder / 'rate_model.json'} and labels.json; next: fcmbench train {codec.name} "
              f"--task-model {task.name} {source}")


COMMANDS = {"list": cmd_list, "run": cmd_run, "report": cmd_report, "train": cmd_train,
            "train-task": cmd_train_task, "evaluate": cmd_evaluate,
            "datasets": cmd_datasets, "fit-rate-model": cmd_fit_rate_model}


def experiment_options(path: Path, options: dict[str, argparse.Action]) -> dict:
    """The run options an experiment file sets, checked as the flags would be: one error per bad key or value."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise FcmbenchError(f"experiment file {path} cannot be read ({err.strerror}): give --config an existing "
                            "TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise FcmbenchError(f"experiment file {path} is not valid TOML: {err}") from None
    settable = {dest: action for dest, action in options.items() if dest not in ("config", "help")}
    resolved = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        action = settable.get(dest)
        if action is None:
            raise FcmbenchError(f"experiment file {path}: unknown key {key!r}; valid keys: "
                                f"{', '.join(sorted(settable))}")
        resolved[dest] = option_value(path, key, value, action)
    return resolved


def option_value(path: Path, key: str, value, action: argparse.Action):
    """A TOML value as the flag would have parsed it (lists join with commas, as --methods takes them)."""
    if action.nargs == 0:  # a switch such as no_reference
        if not isinstance(value, bool):
            raise FcmbenchError(f"experiment file {path}: {key} is a switch: give true or false, not {value!r}")
        return action.const if value else action.default
    if isinstance(value, list):
        value = ",".join(map(str, value))
    if isinstance(value, bool | dict):
        raise FcmbenchError(f"experiment file {path}: {key} = {value!r} is not a value of --{key.replace('_', '-')}")
    try:
        parsed = action.type(str(value)) if action.type else str(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
        raise FcmbenchError(f"experiment file {path}: {key} = {value!r} is not valid ({err})") from None
    if action.choices is not None and parsed not in action.choices:
        raise FcmbenchError(f"experiment file {path}: {key} = {value!r}; choose one of "
                            f"{', '.join(map(str, action.choices))}")
    return parsed


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, over the experiment file ``run --config`` names."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and args.config:
        args = build_parser(experiment_options(args.config, parser.run_options)).parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        COMMANDS[args.command](args)
    except FcmbenchError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; finished items are saved, run the same command again to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
