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

from fcmbench import failpoints, registry
from fcmbench.datasets.base import MAX_IMAGE_PIXELS, DatasetOptions
from fcmbench.errors import FcmbenchError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcmbench", description="Benchmark feature coding for machines.")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("list", help="methods with their rate points, task models, datasets")

    run = commands.add_parser("run", help="evaluate methods x rate points on a dataset")
    run.add_argument("--methods", required=True, help="comma-separated method names, or 'all'")
    run.add_argument("--dataset", required=True, help="dataset name (see `fcmbench list`)")
    run.add_argument("--out", required=True, type=Path, help="results folder (created; reused to resume)")
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
    train.add_argument("method", choices=TRAINABLE)
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

    fit = commands.add_parser("fit-rate-model", help="MFIBA: per-level task loss against rate, D = a·R^b fitted "
                              "per level, and the importance predictor's labels")
    fit.add_argument("method", choices=MFIBA)
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


def cmd_run(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise FcmbenchError(f"--workers {args.workers}: give 1 or more worker processes")
    if args.batch_size is not None and args.batch_size < 1:
        raise FcmbenchError(f"--batch-size {args.batch_size}: give 1 or more images per batch")
    if args.scheduler and args.executor != "dask":
        raise FcmbenchError(f"--scheduler {args.scheduler} is a Dask scheduler: add --executor dask")
    if args.max_image_pixels < 1:
        raise FcmbenchError(f"--max-image-pixels {args.max_image_pixels}: give a positive number of pixels")
    from fcmbench.datasets.shapes import default_cache
    from fcmbench.folderlock import FolderLock
    from fcmbench.paths import writable_folder
    from fcmbench.runner import RunConfig, Runner
    from fcmbench.store import Store

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
        command=shlex.join(["fcmbench", *sys.argv[1:]]),
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


def cmd_report(args: argparse.Namespace) -> None:
    from fcmbench.paths import writable_folder
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
    bd = bd_table(rd, anchor, args.bd_method, monotone=args.monotone,
                  own_anchors=own_anchors(sorted(set(rd["method"]))),
                  meaningful_from=args.meaningful_from) if anchor else None
    if bd is not None:
        bd = with_bd_intervals(bd, rd, samples, args.bd_method, args.monotone)
    levels = level_table(runs, rd)
    history = provenance(runs)
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

    from fcmbench.kitti_eval import LEVELS, evaluate_folders

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
    from fcmbench.tasks.train_task import train_task

    if args.dataset == "shapes" and args.task_model in (None, "shapes_rcnn"):
        from fcmbench.runner import pick_device

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
    from fcmbench.runner import pick_device
    from fcmbench.tasks.base import TaskModelOptions
    from fcmbench.tasks.train_task import evaluate_detector, finetune_model, train_task

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


FINETUNABLE = ("faster_rcnn_r50_fpn", "faster_rcnn_r50_fpn_v2")  # as fcmbench.tasks.train_task (not imported here)
LMSFC_FAMILY = ["lmsfc", "lmsfc-nocm", "tamsf"]
IMAGE_NETWORKS = ["elic", "tcm", "elic-feat", "tcm-feat"]
MFIBA = ["mfiba", "mfiba-elic", "mfiba-tcm"]
TRAINABLE = LMSFC_FAMILY + IMAGE_NETWORKS + MFIBA


def check_output_folders(args: argparse.Namespace) -> None:
    """train and fit-rate-model write checkpoints under --out and features under --cache: check both first."""
    from fcmbench.paths import writable_folder

    for option in ("out", "cache"):
        if getattr(args, option, None) is not None:
            writable_folder(getattr(args, option), f"--{option}", create=False)


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    check_output_folders(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.method in MFIBA:
        return train_mfiba(args)
    if args.quality is None:
        raise FcmbenchError(f"give the quality to train: fcmbench train {args.method} --quality 1..6")
    if args.method in IMAGE_NETWORKS:
        return train_image_codec(args)
    return train_feature_codec(args)


def needs_task_model(args: argparse.Namespace):
    from fcmbench.tasks.base import TaskModelOptions

    if not args.task_model:
        raise FcmbenchError(f"{args.method} trains on a task model's features: give --task-model NAME")
    return registry.task_models.get(args.task_model)(TaskModelOptions(args.weights))


def training_features(args: argparse.Namespace, task) -> tuple:
    """(training dataset or None, training items, their features, validation features)."""
    from fcmbench.datasets.shapes import default_cache
    from fcmbench.runner import ImageWork

    train_set, train_items, val_items = training_images(args)
    cache = (args.cache or default_cache()) / "features"
    features = [ImageWork(item, task, cache).features() for item in train_items + val_items]
    return train_set, train_items, features[: len(train_items)], features[len(train_items):]


def train_config(args: argparse.Namespace, path: Path):
    from fcmbench.methods.train import TrainConfig

    # TA-MSF adds the detection loss after a warm-up on rate-distortion alone (half the steps)
    return TrainConfig(args.method, args.quality, path, steps=args.steps, latent=args.latent, lr=args.lr,
                       task_warmup=args.steps // 2, batch_size=args.batch_size, lmbda=args.lmbda,
                       init=args.init, int8_weights=args.int8_weights, width=args.width)


def train_image_codec(args: argparse.Namespace) -> None:
    """ELIC / LIC-TCM on images (``elic``, ``tcm``) or on the tiled features of a task model (``-feat``)."""
    from fcmbench.codec import CodecOptions
    from fcmbench.datasets.base import load_image
    from fcmbench.methods.checkpoints import checkpoint_path
    from fcmbench.methods.mosaic import feature_mosaics
    from fcmbench.methods.train import train_image_network

    codec = registry.methods.get(args.method)
    if args.method.endswith("-feat"):
        task = needs_task_model(args)
        _, _, train, val = training_features(args, task)
        train = [m for f in train for m in feature_mosaics(f)]
        val = [m for f in val for m in feature_mosaics(f)]
        path = checkpoint_path(args.method, args.quality, CodecOptions(task_model=task.name, checkpoints=args.out))
    else:
        _, train_items, val_items = training_images(args)
        train, val = [load_image(i) for i in train_items], [load_image(i) for i in val_items]
        path = checkpoint_path(args.method, args.quality, CodecOptions(checkpoints=args.out), "images")
    result = train_image_network(train_config(args, path), codec.family, train, val)
    Console().print(f"saved {path} ({kept_weights(result['history'])})")


def train_mfiba(args: argparse.Namespace) -> None:
    from fcmbench.codec import CodecOptions
    from fcmbench.methods.mfiba import train_predictor

    task = needs_task_model(args)
    _, train_items, train, _ = training_features(args, task)
    codec = registry.methods.get(args.method)(CodecOptions(task_model=task.name, checkpoints=args.out))
    path = train_predictor(codec, train_items, train, steps=args.steps, lr=args.lr)
    Console().print(f"saved {path}")


def train_feature_codec(args: argparse.Namespace) -> None:

    from fcmbench.codec import CodecOptions
    from fcmbench.methods.checkpoints import checkpoint_path
    from fcmbench.methods.train import train_codec

    task = needs_task_model(args)
    task_loss = args.method == "tamsf" and not args.no_task_loss
    if task_loss and (args.image_folder or not hasattr(task, "training_loss")):
        raise FcmbenchError(f"tamsf trains with the detection loss of {task.name} on labelled images, which "
                            f"{'--image-folder lacks' if args.image_folder else 'this task model cannot give'}"
                            "; use --dataset with a trainable task model, or --no-task-loss")
    train_set, train_items, train, val = training_features(args, task)
    if task_loss and "segm" in task.iou_types and "segm" not in train_set.iou_types:
        raise FcmbenchError(f"tamsf's detection loss of {task.name} includes its mask head, and --dataset "
                            f"{args.dataset} has no masks; use a box-only detector (e.g. one fine-tuned by "
                            "train-task) or --no-task-loss")
    path = checkpoint_path(args.method, args.quality, CodecOptions(task_model=task.name, checkpoints=args.out))
    config = train_config(args, path)
    targets = None
    if task_loss:
        from fcmbench.tasks.train_task import targets_of

        targets = [targets_of(train_set, item.image_id) for item in train_items]
    result = train_codec(config, train, val, task if targets else None, targets)
    Console().print(f"saved {path} ({kept_weights(result['history'])})")


def kept_weights(history: list[dict]) -> str:
    from fcmbench.methods.train import kept

    best = kept(history)
    return f"weights of step {best['step']}, its best validation loss {best['val_loss']:.4f}"


VALIDATION_IMAGES = 16


def training_images(args: argparse.Namespace) -> tuple:
    """(training dataset or None, training items, validation items) from --dataset or --image-folder."""
    from fcmbench.datasets.base import image_folder_items

    if args.image_folder:
        items = image_folder_items(args.image_folder)
        if len(items) <= VALIDATION_IMAGES:
            raise FcmbenchError(f"image folder {args.image_folder} has {len(items)} images; training needs more "
                                f"than the {VALIDATION_IMAGES} it holds out for validation")
        return None, items[:-VALIDATION_IMAGES][: args.images], items[-VALIDATION_IMAGES:]
    if not args.dataset:
        raise FcmbenchError("give the training images: --dataset NAME or --image-folder DIR")
    build = registry.datasets.get(args.dataset)
    root = getattr(args, "data_root", None)
    train_set = build(DatasetOptions(root=root, split="train", split_file=getattr(args, "split_file", None)))
    val_items = build(DatasetOptions(root=root, split="val", split_file=getattr(args, "val_split_file", None))
                      ).items()[:VALIDATION_IMAGES]
    if {i.path for i in val_items} & {i.path for i in train_set.items()}:
        raise FcmbenchError(f"the validation images of --dataset {args.dataset} are among its training images; "
                            "give separate frames (KITTI: --split-file and --val-split-file)")
    return train_set, train_set.items()[: args.images], val_items


def cmd_fit_rate_model(args: argparse.Namespace) -> None:
    import json

    import torch

    check_output_folders(args)

    from fcmbench.codec import CodecOptions
    from fcmbench.datasets.pseudo import PseudoLabelled
    from fcmbench.datasets.shapes import default_cache
    from fcmbench.methods.mfiba import fit_rate_model, fitted_codec
    from fcmbench.runner import ImageWork

    if args.threads:
        torch.set_num_threads(args.threads)
    task = needs_task_model(args)
    codec = fitted_codec(args.method, CodecOptions(task_model=task.name, checkpoints=args.out))
    codec.fit_qualities()
    dataset, items, _ = training_images(args)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
