"""``fcmbench run``: methods x rate points on a dataset, into a resumable results store."""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from pathlib import Path

from fcmbench.cli.common import Commands, add_kitti_options, console
from fcmbench.core import registry
from fcmbench.core.errors import FcmbenchError
from fcmbench.datasets.options import MAX_IMAGE_PIXELS, DatasetOptions

NAME = "run"


def add(commands: Commands, defaults: dict | None = None) -> argparse.ArgumentParser:
    """This command's parser; ``defaults``: option values an experiment file sets (run only)."""
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
    run.add_argument("--codec-opt", type=codec_option, action="append", metavar="METHOD.KEY=VALUE",
                     help="a setting of one method, repeatable; `fcmbench list` shows each method's settings "
                     "(e.g. vtm-feature.preset=faster, vtm-image.vtm_dir=/opt/VTM-12.0, lmsfc.order=raster)")
    run.add_argument("--redo", help="comma-separated methods whose results already in --out are recomputed "
                     "(e.g. after retraining their checkpoints)")
    run.add_argument("--workers", type=int, default=1,
                     help="processes working on different images at once (one torch thread each)")
    run.add_argument("--batch-size", type=int,
                     help="images per batch through the task network's front and back on a GPU (grouped by "
                     "size; default 4); on the CPU a batch's images go one at a time (default 1)")
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
    run.set_defaults(**(defaults or {}))
    return run


def codec_option(text: str) -> tuple[str, str, str]:
    """``METHOD.KEY=VALUE`` -> (method, key, value)."""
    target, equals, value = text.partition("=")
    method, dot, key = target.rpartition(".")
    if not (equals and dot and method and key):
        raise argparse.ArgumentTypeError(f"{text!r} is not METHOD.KEY=VALUE (e.g. vtm-feature.preset=faster)")
    return method, key, value


def codec_settings(options: list[tuple[str, str, str]] | None) -> dict[str, dict[str, str]]:
    """--codec-opt values by method (canonical names; a later value of a key wins)."""
    settings: dict[str, dict[str, str]] = {}
    for method, key, value in options or []:
        name = registry.methods.resolve(method)[0]
        settings.setdefault(name, {})[key] = value
    return settings


def resolved_configuration(args: argparse.Namespace) -> dict:
    """Every run option as this run used it (flags over the experiment file over defaults), for its provenance."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in sorted(vars(args).items())
            if key not in ("command",)}


def command(args: argparse.Namespace) -> None:
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
        codec_settings=codec_settings(args.codec_opt))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random-weights warning goes to the report instead
        runner = Runner(config, console)
    for name, reason in runner.skipped.items():
        console.print(f"[yellow]skipping {name}:[/] {reason}", highlight=False, soft_wrap=True)
    for name in config.codec_settings.keys() - runner.codecs.keys():
        console.print(f"[yellow]--codec-opt {name}.*: {name} is not in this run; its settings are unused[/]",
                      highlight=False)
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
