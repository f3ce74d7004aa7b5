"""VVC encoder back-ends behind both anchors: VTM binaries supplied by the user, or VVenC built in.

VVenC comes with the ffmpeg of the ``imageio-ffmpeg`` wheel (``libvvenc`` encoder, native ``vvc`` decoder).
It takes 10-bit 4:2:0 only, so a monochrome frame goes in luma with chroma at 512, and perceptual QP
adaptation is switched off (``-qpa 0``). Frames travel through pipes; VTM needs files, kept in a temporary
folder that is always removed.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np

from fcmbench.core.codec import Codec, CodecOptions, RatePoint
from fcmbench.core.errors import FcmbenchError

DECODE_TIMEOUT = 300  # seconds for one picture; a decoder that takes longer is stuck on a damaged stream
VTM_HELP = ("set FCMBENCH_VTM_DIR (or pass --codec-opt METHOD.vtm_dir=DIR) to a VTM build holding "
            "bin/EncoderAppStatic and bin/DecoderAppStatic (or EncoderApp/DecoderApp) and cfg/encoder_intra_vtm.cfg")


@dataclass
class Frame:
    """One picture: ``y`` and optional 4:2:0 ``u``/``v`` planes (uint16) holding ``bit_depth``-bit samples."""

    y: np.ndarray
    u: np.ndarray | None = None
    v: np.ndarray | None = None
    bit_depth: int = 10

    @property
    def monochrome(self) -> bool:
        return self.u is None


def run_tool(command: list[str], what: str, stdin: bytes | None = None, timeout: float = 3600) -> bytes:
    """Run an encoder or decoder; a failure names the binary and quotes the end of its stderr."""
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise FcmbenchError(f"{what}: binary {command[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise FcmbenchError(f"{what}: {command[0]} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.decode(errors="replace").strip().splitlines()[-8:])
        raise FcmbenchError(f"{what}: {command[0]} exited with code {done.returncode}; its stderr ends:\n{tail}")
    return done.stdout


class VVCBackend(ABC):
    name: str

    @abstractmethod
    def encode(self, frame: Frame, qp: int) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes, width: int, height: int, monochrome: bool, bit_depth: int) -> Frame: ...


def to_yuv420_10bit(frame: Frame) -> bytes:
    shift = 10 - frame.bit_depth
    h, w = frame.y.shape
    u = frame.u if frame.u is not None else np.full((h // 2, w // 2), 512 >> shift, np.uint16)
    v = frame.v if frame.v is not None else u
    return b"".join((plane.astype("<u2") << shift).tobytes() for plane in (frame.y, u, v))


def from_yuv420(raw: bytes, width: int, height: int, monochrome: bool, bit_depth: int, source_depth: int,
                what: str) -> Frame:
    luma, chroma = width * height, (width // 2) * (height // 2)
    expected = (luma + 2 * chroma) * 2
    if len(raw) != expected:
        raise FcmbenchError(f"{what}: decoder output holds {len(raw)} bytes, a {width}x{height} 4:2:0 "
                            f"{source_depth}-bit picture needs {expected}")
    samples = np.frombuffer(raw, "<u2").astype(np.int32)
    shift = source_depth - bit_depth
    if shift > 0:
        samples = np.clip((samples + (1 << (shift - 1))) >> shift, 0, (1 << bit_depth) - 1)
    samples = samples.astype(np.uint16)
    y = samples[:luma].reshape(height, width)
    if monochrome:
        return Frame(y, bit_depth=bit_depth)
    u = samples[luma : luma + chroma].reshape(height // 2, width // 2)
    v = samples[luma + chroma :].reshape(height // 2, width // 2)
    return Frame(y, u, v, bit_depth)


class VVenC(VVCBackend):
    """libvvenc through the ffmpeg binary of imageio-ffmpeg."""

    PRESETS = ("faster", "fast", "medium", "slow", "slower")

    def __init__(self, preset: str = "medium") -> None:
        if preset not in self.PRESETS:
            raise FcmbenchError(f"unknown VVenC preset {preset!r}; use one of {', '.join(self.PRESETS)}")
        self.ffmpeg = ffmpeg_binary()
        self.preset = preset
        self.name = f"VVenC (libvvenc in ffmpeg {ffmpeg_version(self.ffmpeg)}, preset {preset}, qpa off)"

    def encode(self, frame: Frame, qp: int) -> bytes:
        h, w = frame.y.shape
        command = [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p10le",
                   "-s", f"{w}x{h}", "-i", "pipe:0", "-frames:v", "1", "-c:v", "libvvenc", "-qp", str(qp),
                   "-qpa", "0", "-preset", self.preset, "-threads", "1", "-f", "vvc", "pipe:1"]
        data = run_tool(command, f"VVenC encode at QP {qp}", to_yuv420_10bit(frame))
        if not data:
            raise FcmbenchError(f"VVenC encode at QP {qp}: {self.ffmpeg} produced no bitstream")
        return data

    def decode(self, data: bytes, width: int, height: int, monochrome: bool, bit_depth: int) -> Frame:
        # one picture at most, in bounded time: a damaged stream must not make ffmpeg emit a video
        command = [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "vvc", "-i", "pipe:0",
                   "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "pipe:1"]
        raw = run_tool(command, "VVC decode", data, timeout=DECODE_TIMEOUT)
        return from_yuv420(raw, width, height, monochrome, bit_depth, 10, "VVC decode")


class VTM(VVCBackend):
    """The VTM reference software supplied by the user (all-intra configuration)."""

    def __init__(self, folder: Path) -> None:
        self.encoder = _find_binary(folder, "EncoderApp")
        self.decoder = _find_binary(folder, "DecoderApp")
        self.config = Path(os.environ.get("FCMBENCH_VTM_CFG", folder / "cfg" / "encoder_intra_vtm.cfg"))
        if not self.config.is_file():
            raise FcmbenchError(f"VTM configuration {self.config} not found; {VTM_HELP}, or set FCMBENCH_VTM_CFG")
        self.version = vtm_version(self.encoder)
        self.name = f"VTM {self.version} ({self.encoder.name}, all-intra)"

    def encode(self, frame: Frame, qp: int) -> bytes:
        h, w = frame.y.shape
        chroma = "400" if frame.monochrome else "420"
        with tempfile.TemporaryDirectory(prefix="fcmbench-vtm-") as tmp:
            source, stream = Path(tmp) / "in.yuv", Path(tmp) / "out.bin"
            planes = [frame.y] if frame.monochrome else [frame.y, frame.u, frame.v]
            dtype = "u1" if frame.bit_depth == 8 else "<u2"
            source.write_bytes(b"".join(p.astype(dtype).tobytes() for p in planes))
            command = [str(self.encoder), "-c", str(self.config), "-i", str(source), "-b", str(stream),
                       "-o", os.devnull, "-wdt", str(w), "-hgt", str(h), "-fr", "1", "-f", "1", "-q", str(qp),
                       f"--InputChromaFormat={chroma}", f"--InputBitDepth={frame.bit_depth}",
                       "--InternalBitDepth=10", "-ts", "1", "--ConformanceWindowMode=1", "--Level=6.2",
                       "--SEIDecodedPictureHash=1"]
            run_tool(command, f"VTM encode at QP {qp}")
            if not stream.is_file() or stream.stat().st_size == 0:
                raise FcmbenchError(f"VTM encode at QP {qp}: {self.encoder} exited 0 but wrote no bitstream")
            return stream.read_bytes()

    def decode(self, data: bytes, width: int, height: int, monochrome: bool, bit_depth: int) -> Frame:
        with tempfile.TemporaryDirectory(prefix="fcmbench-vtm-") as tmp:
            stream, output = Path(tmp) / "in.bin", Path(tmp) / "out.yuv"
            stream.write_bytes(data)
            log = run_tool([str(self.decoder), "-b", str(stream), "-o", str(output), "-d", "10"], "VTM decode")
            if b"MD5 mismatch" in log or b"ERROR" in log:
                raise FcmbenchError(f"VTM decode: {self.decoder} reports a picture hash mismatch")
            if not output.is_file():
                raise FcmbenchError(f"VTM decode: {self.decoder} exited 0 but wrote no picture")
            raw = output.read_bytes()
        if monochrome and len(raw) == width * height * 2:  # some builds write 4:0:0 as luma only
            raw += np.full(2 * (width // 2) * (height // 2), 512, "<u2").tobytes()
        return from_yuv420(raw, width, height, monochrome, bit_depth, 10, "VTM decode")


def _find_binary(folder: Path, stem: str) -> Path:
    for name in (f"bin/{stem}Static", f"bin/{stem}", f"{stem}Static", stem):
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return folder / name
    raise FcmbenchError(f"VTM {stem} not found under {folder}; {VTM_HELP}")


def vtm_version(binary: Path) -> str:
    """VTM prints its version banner on any start; a binary without it is not VTM."""
    try:
        done = subprocess.run([str(binary)], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FcmbenchError(f"could not start VTM binary {binary}: {err}") from None
    banner = (done.stdout + done.stderr).decode(errors="replace")
    match = re.search(r"VTM\w*\s+(?:Encoder\s+)?Version\s+([\w.\-]+)", banner)
    if not match:
        raise FcmbenchError(f"{binary} does not print a VTM version banner; is it the VTM EncoderApp? {VTM_HELP}")
    return match.group(1)


def parallel_encode(encode: Callable[[RatePoint], bytes], rates: list[RatePoint],
                    workers: int) -> list[tuple[bytes, float]]:
    """External encoders are single-threaded processes: run one per rate point, ``workers`` at a time;
    each result carries its own wall time."""

    def timed(rate: RatePoint) -> tuple[bytes, float]:
        start = time.perf_counter()
        return encode(rate), time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(timed, rates))


@cache
def ffmpeg_binary() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise FcmbenchError("the built-in VVC encoder needs the imageio-ffmpeg package: pip install imageio-ffmpeg")\
            from None
    path = imageio_ffmpeg.get_ffmpeg_exe()
    encoders = run_tool([path, "-hide_banner", "-encoders"], "listing ffmpeg encoders").decode()
    if "libvvenc" not in encoders:
        raise FcmbenchError(f"the ffmpeg at {path} has no libvvenc encoder; install an imageio-ffmpeg wheel "
                            f"that has it, or supply VTM ({VTM_HELP})")
    return path


@cache
def ffmpeg_version(path: str) -> str:
    first = run_tool([path, "-version"], "ffmpeg -version").decode().splitlines()[0]
    return first.split()[2] if len(first.split()) > 2 else first


def vvc_backend(vtm_dir: str | Path | None = None, vvenc_preset: str = "medium") -> VVCBackend:
    """VTM when configured (option or FCMBENCH_VTM_DIR), else the built-in VVenC."""
    folder = vtm_dir or os.environ.get("FCMBENCH_VTM_DIR")
    if folder:
        if not Path(folder).is_dir():
            raise FcmbenchError(f"VTM folder {folder} does not exist; {VTM_HELP}")
        return VTM(Path(folder))
    return VVenC(vvenc_preset)


QP_LABEL = re.compile(r"qp(\d{1,2})$")


@dataclass(frozen=True)
class VVCSettings:
    """``preset``: VVenC's speed/efficiency preset; ``vtm_dir``: a VTM build to use instead of VVenC (else
    $FCMBENCH_VTM_DIR); ``jobs``: encoder processes at once (one per rate point)."""

    preset: Literal["faster", "fast", "medium", "slow", "slower"] = "medium"
    vtm_dir: Path | None = None
    jobs: int = 2

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"jobs={self.jobs}: give 1 or more encoder processes")


class VVCCodec(Codec):
    """What both VVC anchors share: the back-end chosen from the settings, QP rate points (``qpNN`` labels
    beyond the defaults are accepted), and concurrent encoder processes."""

    Settings = VVCSettings

    def __init__(self, options: CodecOptions | None = None) -> None:
        super().__init__(options)
        self._backend: VVCBackend | None = None

    @property
    def backend(self) -> VVCBackend:
        if self._backend is None:
            self._backend = vvc_backend(self.settings.vtm_dir, self.settings.preset)
        return self._backend

    def parse_rate(self, label: str) -> RatePoint | None:
        match = QP_LABEL.match(label)
        return RatePoint(label, int(match.group(1))) if match and int(match.group(1)) <= 63 else None

    def encode_batch(self, x, rates: list[RatePoint]) -> list[tuple[bytes, float]]:
        return parallel_encode(lambda rate: self.encode(x, rate), rates, self.settings.jobs)
