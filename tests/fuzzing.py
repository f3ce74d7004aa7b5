"""Structure-aware bitstream fuzzing: seed streams, mutations that know the container and each codec's header,
and a long-lived decoder worker per codec that survives what it decodes.

The worker (``python tests/fuzzing.py worker CODEC``) runs under RLIMIT_AS and decodes one case per request
with a per-case alarm; it answers one outcome line per case. A crash, a hang or the limit ending it shows in the
parent as a dead or silent worker, which is then restarted. Outcomes:

- ``decoded``: a FeatureSet within the limits, every value finite (or a finite image);
- ``rejected``: an FcmbenchError (BitstreamError for stream faults) - the one acceptable failure;
- ``leaked``: any other exception (named); ``memory``: MemoryError under the limit; ``slow``: the alarm fired;
- ``crashed`` / ``hung``: the worker died, or did not answer within the parent's wall time.
"""

from __future__ import annotations

import functools
import hashlib
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "fuzz_corpus"
CODECS = ("raw", "quant", "vtm-feature", "vtm-image", "lmsfc", "lmsfc-nocm", "tamsf", "elic", "tcm", "elic-feat",
          "tcm-feat", "mfiba-elic", "mfiba-tcm")
MEMORY_LIMIT = 6 * 2**30  # address space of a worker (torch alone maps ~1.5 GB)
CASE_SECONDS = 20  # the threshold for a hang
GOOD = ("decoded", "rejected")

# Values a size, count or quality field is set to: the edges, one off them, huge, and NaN (for floats).
SPECIAL_INTS = (0, 1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 255, 256, 4095, 4096, 4097, 32767, 65534, 65535)
SPECIAL_FLOATS = (0.0, -0.0, 1.0, -1.0, 1e-45, 3.4e38, -3.4e38, float("nan"), float("inf"), float("-inf"))


# --- the container, parsed into fields with their offsets ------------------------------------------------------

@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    fmt: str  # struct format of the field, big-endian


def container_fields(data: bytes) -> tuple[list[Field], int, int]:
    """The container's fields, and the header's (offset, length)."""
    fields, pos = [Field("version", 4, ">B"), Field("codec name length", 5, ">B")], 5
    pos += 1 + data[5]
    for i, side in enumerate(("original height", "original width", "input height", "input width")):
        fields.append(Field(side, pos + 2 * i, ">H"))
    pos += 8
    fields.append(Field("header length", pos, ">I"))
    header_length = struct.unpack_from(">I", data, pos)[0]
    header_at = pos + 4
    pos = header_at + header_length
    fields.append(Field("segment count", pos, ">B"))
    count, pos = data[pos], pos + 1
    for index in range(count):
        fields.append(Field(f"segment {index} name length", pos, ">B"))
        pos += 1 + data[pos]
        fields.append(Field(f"segment {index} length", pos, ">I"))
        pos += 4 + struct.unpack_from(">I", data, pos)[0]
    return fields, header_at, header_length


def header_fields(codec: str, header: bytes, base: int) -> list[Field]:
    """Each codec's header layout (see its ``encode``), as fields at absolute offsets."""
    out: list[Field] = []

    def names_from(pos: int, limit: int) -> int:  # a run of short strings; returns where it stops
        while pos < limit:
            out.append(Field("name length", base + pos, ">B"))
            pos += 1 + header[pos]
        return pos

    if codec == "quant":
        out.append(Field("bit depth", base, ">B"))
    elif codec == "vtm-feature":
        out += [Field("min", base, ">f"), Field("max", base + 4, ">f"), Field("qp", base + 8, ">B"),
                Field("level count", base + 9, ">B")]
        pos, count = 10, header[9]
        for index in range(count):
            pos += 1 + header[pos]
            out += [Field(f"level {index} {axis}", base + pos + 2 * k, ">H")
                    for k, axis in enumerate(("channels", "height", "width"))]
            pos += 6
        out.append(Field("derived count", base + pos, ">B"))
    elif codec == "vtm-image":
        out += [Field("qp", base, ">B"), Field("coded height", base + 1, ">H"), Field("coded width", base + 3, ">H")]
    elif codec in ("lmsfc", "lmsfc-nocm", "tamsf"):
        out += [Field("quality", base, ">B"), Field("P2 height", base + 1, ">H"), Field("P2 width", base + 3, ">H"),
                Field("coded levels", base + 5, ">B"), Field("order", base + 6, ">B")]
        names_from(7, len(header))
    elif codec in ("elic", "tcm"):
        out += [Field("quality", base, ">B"), Field("height", base + 1, ">H"), Field("width", base + 3, ">H")]
    elif codec in ("elic-feat", "tcm-feat", "mfiba-elic", "mfiba-tcm"):
        pos, index = 0, 0
        while pos < len(header):
            pos += 1 + header[pos]
            layout = (("channels", ">H"), ("height", ">H"), ("width", ">H"), ("rows", ">B"), ("columns", ">B"),
                      ("quality", ">B"), ("min", ">f"), ("max", ">f"))
            for axis, fmt in layout:
                out.append(Field(f"level {index} {axis}", base + pos, fmt))
                pos += struct.calcsize(fmt)
            index += 1
    return out


def fields_of(codec: str, data: bytes) -> list[Field]:
    fields, header_at, header_length = container_fields(data)
    return fields + header_fields(codec, data[header_at : header_at + header_length], header_at)


def set_field(data: bytes, field: Field, value: float) -> bytes:
    kind = field.fmt[-1]
    if kind == "f":
        packed = struct.pack(field.fmt, value)
    else:
        bits = 8 * struct.calcsize(field.fmt)
        packed = struct.pack(field.fmt, int(value) % (1 << bits) if value == value else 0)
    return data[: field.offset] + packed + data[field.offset + len(packed) :]


def field_value(data: bytes, field: Field) -> float:
    return struct.unpack_from(field.fmt, data, field.offset)[0]


# --- mutations -------------------------------------------------------------------------------------------------

class Seeds(tuple):
    """Seed streams with a short repr (hypothesis shows the strategy's arguments)."""

    def __repr__(self) -> str:
        return f"<{len(self)} seed streams>"


@st.composite
def mutated(draw: st.DrawFn, codec: str, seeds: list[bytes]) -> bytes:
    """One hostile stream: a seed with one to three structure-aware or random edits."""
    data = draw(st.sampled_from(Seeds(seeds)))
    for _ in range(draw(st.integers(1, 3))):
        data = draw(one_edit(codec, data))
    return data


@st.composite
def one_edit(draw: st.DrawFn, codec: str, data: bytes) -> bytes:
    try:
        fields = [f for f in fields_of(codec, data) if f.offset + struct.calcsize(f.fmt) <= len(data)]
    except (IndexError, struct.error):
        fields = []  # an earlier edit broke the structure: random edits only
    kind = draw(st.sampled_from(("field", "field", "field", "nudge", "flip", "bytes", "cut", "insert")
                                if fields else ("flip", "bytes", "cut", "insert")))
    if kind in ("field", "nudge"):
        field = draw(st.sampled_from(fields))
        if kind == "nudge":
            value = field_value(data, field)
            step = draw(st.sampled_from((-1, 1, 2, -2)))
            return set_field(data, field, value + step if value == value else 0)
        pool = SPECIAL_FLOATS if field.fmt.endswith("f") else SPECIAL_INTS
        value = draw(st.sampled_from(pool) | (st.floats(allow_nan=True, width=32) if field.fmt.endswith("f")
                                               else st.integers(0, 2 ** (8 * struct.calcsize(field.fmt)) - 1)))
        return set_field(data, field, value)
    if not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    if kind == "bytes":
        chunk = draw(st.binary(min_size=1, max_size=16))
        return data[:at] + chunk + data[at + len(chunk) :]
    if kind == "cut":
        return data[:at] + data[at + draw(st.integers(1, 64)) :]
    return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]


# --- seeds: real features of the embedded default, coded by every codec -----------------------------------------

@functools.cache
def seed_inputs() -> tuple:
    """One image of the embedded default and its shapes_rcnn features (computed once per process)."""
    import numpy as np
    import torch

    from fcmbench.core import registry
    from fcmbench.datasets.shapes import draw_scene
    from fcmbench.tasks.base import TaskModelOptions

    torch.set_num_threads(1)
    image, _ = draw_scene(np.random.default_rng([7, 0]))
    pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    task = registry.task_models.get("shapes_rcnn")(TaskModelOptions(None, "cpu"))
    return pixels, task.front(pixels)


def seed_streams(codec: str, cache: Path) -> list[bytes]:
    """Two streams per codec (lowest and highest of its first points) from one shapes image, cached on disk."""
    folder = cache / "fuzz-seeds" / codec
    if folder.is_dir() and any(folder.iterdir()):
        return [p.read_bytes() for p in sorted(folder.glob("*.bin"))]
    from fcmbench.core import registry
    from fcmbench.core.codec import CodecOptions, ImageCodec

    faster = {"preset": "faster"}
    options = CodecOptions(task_model="shapes_rcnn", settings={"vtm-feature": faster, "vtm-image": faster})
    instance = registry.methods.get(codec)(options)
    points = instance.rate_points()
    pixels, features = seed_inputs()
    source = pixels if isinstance(instance, ImageCodec) else features
    streams = [data for data, _ in instance.encode_batch(source, [points[0], points[-1]])]
    partial = folder.with_name(f"{codec}.{os.getpid()}.partial")
    partial.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(streams):
        (partial / f"seed{index}.bin").write_bytes(data)
    try:
        partial.rename(folder)
    except OSError:  # another process made them first: theirs are as good
        pass
    return streams


def corpus(codec: str) -> list[Path]:
    return sorted((CORPUS / codec).glob("*.bin"))


def keep(codec: str, data: bytes) -> Path:
    """A stream that ever failed becomes a regression case that CI replays."""
    path = CORPUS / codec / f"{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- the worker and its parent -----------------------------------------------------------------------------------

class Worker:
    """A decoder process for one codec; ``decode(data)`` gives the outcome, restarting the process after a death."""

    def __init__(self, codec: str, wall_seconds: float = CASE_SECONDS + 15) -> None:
        self.codec, self.wall = codec, wall_seconds
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": ""}
        self.process = subprocess.Popen([sys.executable, str(Path(__file__)), "worker", self.codec],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        env=env)
        line = self._read_line(120)
        if line != "ready":
            raise RuntimeError(f"the {self.codec} fuzz worker did not start: {line!r}")

    def _read_line(self, seconds: float) -> str | None:
        import select

        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], seconds)
        if not ready:
            return None
        line = self.process.stdout.readline()
        return line.decode().strip() if line else None

    def decode(self, data: bytes) -> str:
        if self.process is None or self.process.poll() is not None:
            self._start()
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(struct.pack(">I", len(data)) + data)
            self.process.stdin.flush()
        except BrokenPipeError:
            return self._dead("crashed")
        line = self._read_line(self.wall)
        if line is None:
            return self._dead("hung" if self.process.poll() is None else f"crashed ({self.process.returncode})")
        return line

    def _dead(self, outcome: str) -> str:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process, self.restarts = None, self.restarts + 1
        return outcome

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class SlowCase(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise SlowCase


def outcome_of(codec: object, data: bytes) -> str:
    import torch

    from fcmbench.core.errors import FcmbenchError
    from fcmbench.core.featureset import FeatureSet

    signal.alarm(CASE_SECONDS)
    try:
        decoded = codec.decode(data)
        # checked here independently of fcmbench.core.limits, so the fuzzer also judges code without them
        tensors = list(decoded.values()) if isinstance(decoded, FeatureSet) else [decoded]
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            return "leaked: non-finite values decoded"
        if isinstance(decoded, FeatureSet) and min(*decoded.original_size, *decoded.input_size) < 1:
            return "leaked: an empty image size decoded"
        return "decoded"
    except FcmbenchError:
        return "rejected"
    except SlowCase:
        return "slow"
    except MemoryError:
        return "memory"
    except Exception as err:  # exactly what the fuzzer looks for: report it, keep the worker alive
        where = traceback.extract_tb(err.__traceback__)[-1]
        return f"leaked: {type(err).__name__} at {Path(where.filename).name}:{where.lineno}"
    finally:
        signal.alarm(0)


def worker_main(codec_name: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import torch

    from fcmbench.core import registry
    from fcmbench.core.codec import CodecOptions

    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    codec = registry.methods.get(codec_name)(CodecOptions(task_model="shapes_rcnn"))
    stdin, stdout = sys.stdin.buffer, sys.stdout
    stdout.write("ready\n")
    stdout.flush()
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        data = stdin.read(struct.unpack(">I", head)[0])
        start = time.perf_counter()
        outcome = outcome_of(codec, data)
        if outcome == "decoded" and time.perf_counter() - start > CASE_SECONDS:
            outcome = "slow"
        stdout.write(outcome + "\n")
        stdout.flush()


def harvest(codec: str, cases: int, cache: Path) -> dict[str, int]:
    """Run ``cases`` cases and keep every failing stream in the corpus (e.g. against an older fcmbench on
    PYTHONPATH, to pin what it got wrong); returns the outcome counts."""
    from collections import Counter

    from hypothesis import HealthCheck, given, settings

    worker, seeds, outcomes = Worker(codec), seed_streams(codec, cache), Counter()

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=mutated(codec, seeds))
    def one_case(data: bytes) -> None:
        outcome = worker.decode(data)
        outcomes[outcome.split(" at ")[0]] += 1
        if outcome not in GOOD:
            keep(codec, data)

    one_case()
    worker.close()
    return dict(outcomes)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        worker_main(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "harvest":
        print(sys.argv[2], harvest(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])), flush=True)
    else:
        sys.exit("usage: python tests/fuzzing.py worker CODEC | harvest CODEC CASES CACHE_DIR")
