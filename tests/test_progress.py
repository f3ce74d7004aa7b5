"""Progress without a terminal: a line per finished (method, rate point), and a periodic line between them."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from fcmbench.core.codec import RatePoint
from fcmbench.datasets.base import DatasetItem
from fcmbench.pipeline.runner import PointLog

LOW, HIGH = RatePoint("q1", 1.0), RatePoint("q2", 2.0)


def _log(every: float) -> tuple[PointLog, io.StringIO]:
    out = io.StringIO()
    items = [DatasetItem(i, Path(f"{i}.png"), 8, 8) for i in range(3)]
    # one item of image 0 was finished by an earlier run
    pending = [(items[0], [("quant", HIGH)])] + [(item, [("quant", LOW), ("quant", HIGH)]) for item in items[1:]]
    return PointLog(Console(file=out, width=200), pending, total=6, every=every), out


def test_a_line_for_each_finished_rate_point_with_items_elapsed_and_time_left():
    log, out = _log(every=3600)
    for method, rate in [("quant", "q2"), ("quant", "q1"), ("quant", "q2"), ("quant", "q1"), ("quant", "q2")]:
        log.finished(method, rate)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["quant q1 done", "quant q2 done"]
    assert lines[0].startswith("quant q1 done: 5/6 items, ") and "s elapsed, about" in lines[0]
    assert lines[1].startswith("quant q2 done: 6/6 items, ") and lines[1].endswith("about 0 s left")


def test_between_finished_points_a_periodic_line_counts_points_not_a_point_name():
    log, out = _log(every=0)
    log.finished("quant", "q2")
    assert out.getvalue().startswith("0/2 rate points done: 2/6 items, ")


def test_on_a_terminal_the_live_bar_names_the_method_and_rate_point(tmp_path):
    from fcmbench.pipeline.runner import RunConfig, Runner
    from fcmbench.pipeline.store import Store

    out = io.StringIO()
    config = RunConfig(methods=["quant"], dataset="shapes", out=tmp_path / "run", rates=["4bit"], limit=1,
                       device="cpu", cache=tmp_path / "cache")
    Runner(config, Console(file=out, force_terminal=True, width=200)).run(Store(tmp_path / "run"))
    shown = set(re.findall(r"(quant 4bit|raw float32) \(image 1\)", out.getvalue()))
    # the bar redraws ten times a second, so under load only its final state (the last item) is sure to be seen
    assert shown and shown <= {"quant 4bit", "raw float32"}
