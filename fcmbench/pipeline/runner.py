"""The runner: methods x rate points x images, each work item run once and recorded as it finishes."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import platform
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fcmbench.core import failpoints, registry
from fcmbench.core.codec import Codec, CodecOptions, ImageCodec, RatePoint
from fcmbench.core.errors import BitstreamError, FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.core.limits import MAX_IMAGE_SIDE
from fcmbench.core.paths import default_cache
from fcmbench.datasets.base import Dataset, DatasetItem, file_digest, load_image
from fcmbench.datasets.options import MAX_IMAGE_PIXELS, DatasetOptions
from fcmbench.evaluation.bootstrap import pack_matches
from fcmbench.pipeline.store import ItemResult, Store, image_set_key
from fcmbench.tasks.base import TaskModel, TaskModelOptions

LIBRARIES = ("torch", "torchvision", "compressai", "numpy", "pycocotools", "scipy", "pandas")


@dataclass
class RunConfig:
    methods: list[str]
    dataset: str
    out: Path
    task_model: str | None = None
    weights: str | None = None
    rates: list[str] | None = None
    limit: int | None = None
    device: str = "auto"
    checkpoints: Path | None = None
    cache: Path | None = None
    dataset_options: DatasetOptions = field(default_factory=DatasetOptions)
    codec_settings: dict[str, dict[str, object]] = field(default_factory=dict)  # method -> its settings
    skip_unready: bool = False  # with --methods all: leave out methods that lack checkpoints, saying why
    command: str = ""
    configuration: dict = field(default_factory=dict)  # every run option as resolved (flags over --config)
    workers: int = 1  # processes that work on different images at once (one torch thread each)
    executor: str = "local"  # "local": a process pool on this machine; "dask": a Dask cluster
    scheduler: str | None = None  # a running Dask scheduler's address; None starts a LocalCluster of `workers`
    redo: list[str] = field(default_factory=list)  # methods whose stored results are recomputed
    max_image_pixels: int = MAX_IMAGE_PIXELS  # larger images are refused before they are decoded
    reference: bool = True  # also run the uncompressed reference (raw) when --methods leaves it out
    batch_size: int | None = None  # images per front/back batch; None: 4 on a GPU, 1 on the CPU (where batches
    # measured slower: an R50-FPN's front 0.71x at batch 4); the results do not depend on it


# The uncompressed features through the back: the task model's unsplit accuracy, against which the report
# judges whether a BD-rate's accuracy range means anything. One back pass per image.
REFERENCE = "raw"


def pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise FcmbenchError(f"--device {requested}: no CUDA device is available here; use --device cpu")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise FcmbenchError(f"--device {requested!r} is not one of auto, cpu, cuda, cuda:N")
    return requested


def select_rates(codec: Codec, wanted: list[str] | None) -> list[RatePoint]:
    """The codec's operating points, or the named labels it understands (e.g. ``qp30`` for VVC anchors)."""
    if not wanted:
        return codec.rate_points()
    return [point for label in wanted if (point := codec.parse_rate(label)) is not None]


class Runner:
    def __init__(self, config: RunConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or Console(stderr=True)
        self.device = pick_device(config.device)
        self.batch_size = config.batch_size or (1 if self.device == "cpu" else 4)
        self.dataset: Dataset = registry.datasets.get(config.dataset)(config.dataset_options)
        task_name = config.task_model or self.dataset.default_task_model
        self.task: TaskModel = registry.task_models.get(task_name)(TaskModelOptions(config.weights, self.device))
        options = CodecOptions(device=self.device, task_model=self.task.name, checkpoints=config.checkpoints,
                               settings=config.codec_settings)
        self.codecs = {name: registry.methods.get(name)(options) for name in config.methods}
        self.rates = {name: select_rates(codec, config.rates) for name, codec in self.codecs.items()}
        self._check_rates()
        self.added_reference = config.reference and REFERENCE not in self.codecs
        if self.added_reference:
            self.codecs[REFERENCE] = registry.methods.get(REFERENCE)(options)
            self.rates[REFERENCE] = self.codecs[REFERENCE].rate_points()
        self.skipped = self._drop_unready()
        self.items = self._selected_items()
        self.cache = (config.cache or default_cache()) / "features"

    def _check_rates(self) -> None:
        if not self.config.rates:
            return
        known = {p.label for codec in self.codecs.values() for p in codec.rate_points()}
        unknown = [label for label in self.config.rates
                   if not any(codec.parse_rate(label) for codec in self.codecs.values())]
        if unknown:
            raise FcmbenchError(f"rate point(s) {', '.join(unknown)} belong to none of the methods; "
                                f"known labels: {', '.join(sorted(known))}")

    def _drop_unready(self) -> dict[str, str]:
        skipped = {}
        for name, codec in list(self.codecs.items()):
            try:
                codec.ensure_ready(self.rates[name])
            except FcmbenchError as err:
                if not self.config.skip_unready:
                    raise
                skipped[name] = str(err)
                del self.codecs[name], self.rates[name]
        if not self.codecs:
            raise FcmbenchError("no method is ready to run: " + "; ".join(skipped.values()))
        return skipped

    def _selected_items(self) -> list[DatasetItem]:
        items = self.dataset.items()
        if self.config.limit is not None:
            if self.config.limit < 1:
                raise FcmbenchError("--limit must be at least 1")
            items = items[: self.config.limit]
        if not items:
            raise FcmbenchError(f"dataset {self.dataset.describe()} has no images")
        missing = [str(i.path) for i in items if not i.path.is_file()]
        if missing:
            raise FcmbenchError(f"{len(missing)} image file(s) listed in the annotations are missing, e.g. "
                                f"{missing[0]}; check --images / --data-root")
        return items

    def setup_description(self) -> dict:
        return {"dataset": self.dataset.describe(), "task_model": self.task.name,
                "weights": self.task.weights_id, "preprocessing": self.task.preprocessing_id()}

    def provenance(self) -> dict:
        versions = {}
        for lib in ("fcmbench",) + LIBRARIES:
            try:
                versions[lib] = version(lib)
            except PackageNotFoundError:
                versions[lib] = None
        return {"command": self.config.command or " ".join(sys.argv), "versions": versions,
                "configuration": self.config.configuration,
                "python": platform.python_version(), "platform": platform.platform(),
                "task_model": self.task.name, "weights": self.task.weights_id,
                "warnings": list(self.task.warnings), "dataset": self.dataset.describe(),
                "images": len(self.items), "device": self.device,
                "methods": {n: c.describe() for n, c in self.codecs.items()},
                # a method built on another (MFIBA on its tiled codec) is also judged against it; the report
                # reads this pairing here rather than importing the codecs
                "built_on": {n: c.anchor.name for n, c in self.codecs.items() if getattr(c, "anchor", None)}}

    def run(self, store: Store) -> int:
        """Run every unfinished item, then evaluate; returns how many items were computed."""
        setup = store.add_setup(self.dataset.name, self.task.name, self.setup_description())
        store.add_run(setup, self.provenance())
        self.check_producers(store, setup)
        done = store.finished(setup)
        plan = [(m, r) for m in self.codecs for r in self.rates[m]]
        total = len(plan) * len(self.items)
        computed = 0
        pending = [(item, todo) for item in self.items
                   if (todo := [(m, r) for m, r in plan if (m, r.label, item.image_id) not in done])]
        with self._worker_pool(pending) as pool, self._progress() as progress:
            bar = progress.add_task("items", total=total, completed=total - sum(len(t) for _, t in pending))
            log = None if self.console.is_terminal else PointLog(self.console, pending, total)
            if self.config.executor == "dask":
                results = on_dask(self.config, pending, list(self.codecs))
            elif pool is not None:
                results = self._in_workers(pending, pool)
            else:
                results = self._here(pending)
            for result in results:
                store.add_item(setup, result)
                computed += 1
                progress.update(bar, advance=1, description=f"{result.method} {result.rate} (image {result.image_id})")
                if log:
                    log.finished(result.method, result.rate)
            self.evaluate(store, setup, pool)
        return computed

    def check_producers(self, store: Store, setup: str) -> None:
        """Stored results are reused only if the same codec made them: after a retrained checkpoint or a
        changed encoder setting they are stale, an error unless ``--redo`` names the method."""
        extra = [m for m in self.config.redo if m not in self.config.methods]
        if extra:
            raise FcmbenchError(f"--redo names {', '.join(extra)}, which this run does not include: add "
                                "it to --methods")
        for method, codec in self.codecs.items():
            if method in self.config.redo:
                # rate points the codec no longer has (a refitted MFIBA names its λ points anew) go too
                current = {p.label for p in codec.rate_points()}
                for label in store.stored_rates(setup, method) - current:
                    store.forget(setup, method, label)
            for rate in self.rates[method]:
                identity, before = codec.identity(rate), store.producer(setup, method, rate.label)
                if method in self.config.redo:
                    store.forget(setup, method, rate.label)
                elif before is not None and before != identity:
                    raise FcmbenchError(
                        f"{self.config.out} holds {method} {rate.label} results made by another codec ({before}; "
                        f"now {identity}): pass --redo {method} to recompute them, or use a new --out folder")
                store.set_producer(setup, method, rate.label, identity)

    def _here(self, pending: list) -> Iterator[ItemResult]:
        """Chunks of ``batch_size`` images. On a GPU the next chunk's fronts run in a thread while this chunk's
        codecs code on the CPU; on the CPU the two cores are busy already and task models run from this thread
        (``native_kernels``'s switch is process-wide)."""
        chunks = [pending[i:i + self.batch_size] for i in range(0, len(pending), self.batch_size)]
        overlap = self.device != "cpu"
        with ThreadPoolExecutor(1) as ahead:
            upcoming = None
            for i, chunk in enumerate(chunks):
                prepared = upcoming.result() if upcoming else self.prepared(chunk)
                nxt = chunks[i + 1] if i + 1 < len(chunks) else None
                upcoming = ahead.submit(self.prepared, nxt) if overlap and nxt else None
                yield from self.chunk_results(chunk, prepared)

    def results_of(self, chunk: list[tuple[DatasetItem, list]]) -> list[ItemResult]:
        """The results of a chunk of images for their unfinished (method, rate point) pairs (a worker's unit)."""
        return list(self.chunk_results(chunk, self.prepared(chunk)))

    def prepared(self, chunk: list[tuple[DatasetItem, list]]) -> tuple[list[ImageWork], FcmbenchError | None]:
        """The chunk's images, with their front features where a feature codec needs them (cached, or one
        batched front). An image that does not load ends the chunk there: the images before it are still
        coded and stored, then its error stops the run, as in a run of one image at a time."""
        works, missing, error = [], [], None
        for item, todo in chunk:
            work = ImageWork(item, self.task, self.cache, self.config.max_image_pixels)
            images = [isinstance(self.codecs[method], ImageCodec) for method, _ in todo]
            front_needed = not all(images) and not work.load_cached()
            if front_needed or any(images):
                try:
                    work.image  # noqa: B018  decoded now: a bad file ends the chunk before its batch
                except FcmbenchError as err:
                    error = err
                    break
            works.append(work)
            if front_needed:
                missing.append(work)
        self._fronts(missing)
        return works, error

    def _fronts(self, works: list[ImageWork]) -> None:
        """One batched front for the images whose features are not cached."""
        if not works:
            return
        start = time.perf_counter()
        with torch.inference_mode():
            features = self.task.front_batch([work.image for work in works])
        share = (time.perf_counter() - start) / len(works)
        for work, feature in zip(works, features, strict=True):
            work.keep(feature, share)

    def chunk_results(self, chunk: list[tuple[DatasetItem, list]],
                      prepared: tuple[list[ImageWork], FcmbenchError | None]) -> Iterator[ItemResult]:
        """Each method in turn: every image encoded at its rate points, then per rate point the decoded images
        through the back as one batch; results come one (method, rate point) at a time, to be stored."""
        works, error = prepared
        chunk = chunk[:len(works)]
        for method, codec in self.codecs.items():
            rates_of = [[r for m, r in todo if m == method] for _, todo in chunk]
            coded = {}  # (image index, rate label) -> (bitstream, encode seconds)
            for i, (work, rates) in enumerate(zip(works, rates_of, strict=True)):
                if rates:
                    with work.context(method), torch.inference_mode():
                        encoded = codec.encode_batch(work.source(codec), rates)
                    coded.update({(i, r.label): e for r, e in zip(rates, encoded, strict=True)})
            for rate in self.rates[method]:
                members = [i for i, rates in enumerate(rates_of) if rate in rates]
                if members:
                    yield from self._finish(method, codec, rate, [(works[i], *coded[i, rate.label]) for i in members])
        if error:
            raise error

    def _finish(self, method: str, codec: Codec, rate: RatePoint,
                coded: list[tuple[ImageWork, bytes, float]]) -> list[ItemResult]:
        decoded, decode_s = [], []
        with torch.inference_mode():
            for work, data, _ in coded:
                with work.context(f"{method} at {rate.label}"):
                    features, seconds = codec.decode_timed(data)
                    work.check_decoded(codec, features)
                decoded.append(features)
                decode_s.append(seconds)
            front_s = [work.front_s for work, _, _ in coded]
            if isinstance(codec, ImageCodec):
                start = time.perf_counter()
                decoded = self.task.front_batch(decoded)
                front_s = [(time.perf_counter() - start) / len(coded)] * len(coded)
            start = time.perf_counter()
            predictions = self.task.back_batch(decoded)
            back_s = (time.perf_counter() - start) / len(coded)
        return [ItemResult(
            method=method, rate=rate.label, image_id=work.item.image_id, rate_value=rate.value,
            pixels=work.item.width * work.item.height, bytes=len(data), bytes_per_level=codec.bytes_per_level(data),
            encode_s=encode_s, decode_s=decode, front_s=front, back_s=back_s,
            predictions=self.task.to_coco_results(work.item.image_id, prediction), stream_info=codec.stream_info(data))
            for (work, data, encode_s), decode, front, prediction in zip(coded, decode_s, front_s, predictions,
                                                                         strict=True)]

    @contextmanager
    def _worker_pool(self, pending: list) -> Iterator[ProcessPoolExecutor | None]:
        """With ``--workers N`` (and work to do), N - 1 processes beside this one, each with its own task model and
        codecs (this process has its own already: it works too, one torch thread like them, while they start)."""
        if self.config.executor == "dask" or self.config.workers < 2 or not pending:
            yield None
            return
        context = multiprocessing.get_context("spawn")  # forking a process with torch threads can hang
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ProcessPoolExecutor(self.config.workers - 1, context, initializer=_start_worker,
                                     initargs=(self.config,)) as pool:
                yield pool
        finally:
            torch.set_num_threads(threads)

    def _in_workers(self, pending: list, pool: ProcessPoolExecutor) -> Iterator[ItemResult]:
        """Chunks of images for the worker processes and for this one: each takes the next chunk when it is free.
        Results come back here to be stored, so the store has one writer and a failure stops the run like a
        serial one."""
        size = self.batch_size
        chunks = deque(pending[i:i + size] for i in range(0, len(pending), size))
        running: set[Future] = set()
        try:
            while chunks or running:
                # each worker's next chunk queued, but not at the end, where this process would wait for it
                depth = 2 if len(chunks) > self.config.workers else 1
                while chunks and len(running) < depth * (self.config.workers - 1):
                    running.add(pool.submit(_chunk_in_worker, chunks.popleft()))
                if chunks:
                    yield from self.results_of(chunks.popleft())
                finished, running = wait(running, timeout=0 if chunks else None, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield from future.result()
        except BaseException:
            for future in running:
                future.cancel()
            raise

    def _progress(self) -> Progress:
        return Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=self.console, transient=False)

    def evaluate(self, store: Store, setup: str, pool: ProcessPoolExecutor | None = None) -> None:
        """pycocotools on every rate point not evaluated yet, in the worker processes when there are some."""
        image_ids = [i.image_id for i in self.items]
        image_set = image_set_key(image_ids)
        iou_types = tuple(t for t in self.task.iou_types if t in self.dataset.iou_types)
        todo = [(method, rate, store.items(setup, method, rate.label, image_ids))
                for method, points in self.rates.items() for rate in points
                if not store.has_evaluation(setup, method, rate.label, image_set)]
        predictions = [[p for row in rows for p in row["predictions"]] for _, _, rows in todo]
        # the workers take their share of the points (submitted first), this process the rest
        mine = len(todo) // self.config.workers if pool else len(todo)
        theirs = [pool.submit(_evaluate_in_worker, results, image_ids, iou_types)
                  for results in predictions[mine:]] if pool else []
        scores = [self.dataset.evaluate_matched(results, image_ids, iou_types) for results in predictions[:mine]]
        scores += [future.result() for future in theirs]
        for (method, rate, rows), (metrics, matches) in zip(todo, scores, strict=True):
            failpoints.reached("evaluation")
            store.add_evaluation(setup, method, rate.label, image_set, rate.value, len(rows),
                                 8 * sum(r["bytes"] for r in rows), sum(r["pixels"] for r in rows), metrics,
                                 pack_matches(matches) if matches else b"")


class PointLog:
    """Without a terminal (a log file, CI) the live bar shows nothing: one line per finished (method, rate point)
    instead, with the items done, the time elapsed and an estimate of the time left, and at least one line every
    ``every`` seconds (images are run one after another, so points tend to finish together at the end)."""

    def __init__(self, console: Console, pending: list[tuple[DatasetItem, list]], total: int,
                 every: float = 30.0) -> None:
        self.console, self.total, self.start, self.computed = console, total, time.monotonic(), 0
        self.every, self.last = every, self.start
        self.left: dict[tuple[str, str], int] = {}
        for _, todo in pending:
            for method, rate in todo:
                self.left[method, rate.label] = self.left.get((method, rate.label), 0) + 1
        self.done = total - sum(self.left.values())

    def finished(self, method: str, rate: str) -> None:
        self.done += 1
        self.computed += 1
        self.left[method, rate] -= 1
        now = time.monotonic()
        if self.left[method, rate] == 0 or now - self.last >= self.every:
            # the periodic line names no point: an image's items arrive together, so the last one says little
            points_done = sum(left == 0 for left in self.left.values())
            what = (f"{method} {rate} done" if self.left[method, rate] == 0
                    else f"{points_done}/{len(self.left)} rate points done")
            remaining = (now - self.start) / self.computed * (self.total - self.done)
            self.console.print(f"{what}: {self.done}/{self.total} items, {now - self.start:.0f} s elapsed, "
                               f"about {remaining:.0f} s left", highlight=False)
            self.last = now


_worker_runner: Runner | None = None


def _start_worker(config: RunConfig) -> None:
    global _worker_runner
    torch.set_num_threads(1)
    _worker_runner = Runner(config, Console(quiet=True))


def _chunk_in_worker(chunk: list[tuple[DatasetItem, list]]) -> list[ItemResult]:
    return _worker_runner.results_of(chunk)


def _evaluate_in_worker(results: list[dict], image_ids: list[int], iou_types: tuple[str, ...]) -> tuple[dict, dict]:
    return _worker_runner.dataset.evaluate_matched(results, image_ids, iou_types)


DASK_ATTEMPTS = 3  # a unit whose worker dies this many times is reported instead of retried again


def on_dask(config: RunConfig, pending: list[tuple[DatasetItem, list]], methods: list[str]) -> Iterator[ItemResult]:
    """The (image, method) units on a Dask cluster, so that slow encoders spread over the workers; results come
    back here, the one writer of the store. A unit whose worker dies is run again on another worker (Dask's
    ``allowed-failures``); an exception inside a unit stops the run as in a serial one."""
    import dask
    from distributed import Client, LocalCluster, as_completed
    from distributed.scheduler import KilledWorker

    units = [(item, method, [(m, r) for m, r in todo if m == method])
             for item, todo in pending for method in methods if any(m == method for m, _ in todo)]
    with dask.config.set({"distributed.scheduler.allowed-failures": DASK_ATTEMPTS - 1}):
        cluster = None if config.scheduler else LocalCluster(
            n_workers=config.workers, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.CRITICAL)  # a restarted worker is Dask's business; a lost unit is reported
        try:
            with Client(config.scheduler or cluster, timeout="20s") as client:
                futures = {client.submit(_unit_on_dask_worker, config, item, todo, pure=False): (item, method)
                           for item, method, todo in units}
                try:
                    for future in as_completed(futures):
                        try:
                            results = future.result()
                        except KilledWorker:
                            item, method = futures[future]
                            raise FcmbenchError(
                                f"image {item.image_id} ({item.path.name}), method {method}: its Dask worker died "
                                f"{DASK_ATTEMPTS} times (out of memory? a crashing decoder?); the finished items "
                                "are saved: look at the workers' logs, then run the same command again") from None
                        yield from results
                finally:
                    client.cancel(list(futures))
        except OSError as err:  # no scheduler at that address
            raise FcmbenchError(f"--scheduler {config.scheduler}: cannot reach the Dask scheduler ({err}); start "
                                "it (dask scheduler) or leave --scheduler out for a local cluster") from None
        finally:
            if cluster is not None:
                cluster.close()


_dask_runners: dict[str, Runner] = {}


def _unit_on_dask_worker(config: RunConfig, item: DatasetItem, todo: list[tuple[str, RatePoint]]) -> list[ItemResult]:
    """One (image, method) unit on a Dask worker, which builds the task model and codecs once per run."""
    failpoints.reached("dask-unit")
    key = repr(config)
    if key not in _dask_runners:
        torch.set_num_threads(1)
        _dask_runners.clear()
        _dask_runners[key] = Runner(config, Console(quiet=True))
    return _dask_runners[key].results_of([(item, todo)])


def derived_of(saved: dict) -> dict[str, str]:
    """A cache entry's derived levels (entries of earlier versions kept them under ``meta``)."""
    return saved.get("derived", saved.get("meta", {}).get("derived", {}))


class ImageWork:
    """Everything done for one image: its pixels and front features are computed at most once."""

    def __init__(self, item: DatasetItem, task: TaskModel, cache: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        self.item = item
        self.max_pixels = max_pixels
        self.task = task
        self.cache = cache
        self._image: torch.Tensor | None = None
        self._features: FeatureSet | None = None
        self.front_s = 0.0

    @property
    def image(self) -> torch.Tensor:
        if self._image is None:
            image = load_image(self.item, self.max_pixels)
            if max(image.shape[-2:]) > MAX_IMAGE_SIDE:  # the bitstream's sizes would be refused on decoding
                raise FcmbenchError(f"image {self.item.path} is {image.shape[-1]}x{image.shape[-2]}: fcmbench codes "
                                    f"images up to {MAX_IMAGE_SIDE} pixels a side; resize it")
            self._image = image
        return self._image

    def features(self) -> FeatureSet:
        """The front features, from the cache or computed alone (the runner batches them: ``keep``)."""
        if self._features is None and not self.load_cached():
            start = time.perf_counter()
            with torch.inference_mode():
                features = self.task.front(self.image)
            self.keep(features, time.perf_counter() - start)
        return self._features

    def source(self, codec: Codec) -> FeatureSet | torch.Tensor:
        return self.image if isinstance(codec, ImageCodec) else self.features()

    def _cache_path(self) -> Path:
        parts = [self.task.name, self.task.weights_id, self.task.preprocessing_id(), file_digest(self.item.path)]
        key = "|".join(parts)
        return self.cache / f"{hashlib.sha256(key.encode()).hexdigest()}.pt"

    def load_cached(self) -> bool:
        path = self._cache_path()
        if path.is_file():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                self._features = FeatureSet(saved["levels"], tuple(saved["original_size"]),
                                            tuple(saved["input_size"]), derived_of(saved))
                # the front's time when it computed these features (entries of older versions have none)
                self.front_s = float(saved.get("front_s", 0.0))
                return True
            except Exception:  # a damaged cache entry is recomputed, never trusted
                path.unlink(missing_ok=True)
        return False

    def keep(self, features: FeatureSet, front_s: float) -> None:
        """Front features computed for this image, kept and written to the cache."""
        self._features, self.front_s = features, front_s
        path = self._cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        # one partial file per process: two runs sharing the cache may compute the same entry at once
        partial = path.with_suffix(f".{os.getpid()}.partial")
        torch.save({"levels": features.levels, "original_size": list(features.original_size),
                    "input_size": list(features.input_size), "derived": features.derived, "front_s": front_s}, partial)
        failpoints.reached("cache-write")
        partial.replace(path)

    @contextmanager
    def context(self, what: str) -> Iterator[None]:
        try:
            yield
        except FcmbenchError as err:
            raise FcmbenchError(f"{what} on image {self.item.image_id} ({self.item.path.name}): {err}") from None

    def check_decoded(self, codec: Codec, decoded: FeatureSet | torch.Tensor) -> None:
        """The back of the task network gets only what its front could have made: the shapes and sizes of what
        was encoded (a stream can pass every check of its own and still describe other features)."""
        if isinstance(codec, ImageCodec):
            if tuple(decoded.shape) != tuple(self.image.shape):
                raise BitstreamError(f"corrupt bitstream: decoded image is {tuple(decoded.shape)}, the encoded one "
                                     f"{tuple(self.image.shape)}")
            return
        source = self.features()
        if (decoded.shapes() != source.shapes() or decoded.input_size != source.input_size
                or decoded.original_size != source.original_size):
            raise BitstreamError(f"corrupt bitstream: decoded levels {decoded.shapes()} at sizes "
                                 f"{decoded.original_size}/{decoded.input_size} differ from the encoded ones "
                                 f"{source.shapes()} at {source.original_size}/{source.input_size}")
