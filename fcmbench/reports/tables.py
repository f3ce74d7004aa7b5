"""RD points and BD-rates as pandas tables, read from one or more results stores and published rd.csv tables."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from fcmbench.core.bitstream import HEADER_KEY
from fcmbench.core.errors import FcmbenchError
from fcmbench.evaluation.metrics import BDRateUnavailable, bd_rate_over, bpp
from fcmbench.pipeline.store import Store

ANCHOR_PREFERENCE = ("vtm-feature", "vtm-image", "quant")
UNCOMPRESSED = "raw"  # the lossless point: the accuracy a BD-rate's overlap is measured against
MEANINGFUL_FROM = 0.8
LOW_ACCURACY = "low-accuracy regime"
BD_COLUMNS = ["setup", "dataset", "task_model", "method", "anchor", "metric", "bd_rate_pct", "ci_low", "ci_high",
              "resamples", "overlap_low", "overlap_high", "uncompressed", "overlap_share", "regime",
              "anchor_points", "test_points", "note"]
KEYS = ["dataset", "task_model", "setup"]
NUMBER_COLUMNS = {"n_images", "bpp", "bits", "pixels", "quality", "rate_value"}  # checked on reading
PUBLISHED_COLUMNS = ["dataset", "task_model", "method", "rate", "n_images", "bpp"]


def is_published_table(source: Path) -> bool:
    """A report source is either a results folder or an rd.csv an earlier report wrote."""
    return source.suffix == ".csv"


def stores(sources: list[Path]) -> Iterator[tuple[Path, Store]]:
    """Each results folder's store, opened read-side and closed after use (published tables are skipped)."""
    for folder in sources:
        if is_published_table(folder):
            continue
        store = Store(folder, create=False)
        try:
            yield folder, store
        finally:
            store.close()


def rd_table(sources: list[Path]) -> pd.DataFrame:
    """One row per (dataset, task model, method, rate point): bpp, accuracies, times; newest evaluation wins, and
    a method in a store replaces its points in published tables. ``source`` names where each row came from."""
    rows = [{**row, "source": str(folder)} for folder, store in stores(sources) for row in _rd_rows(store)]
    stored = {(r["setup"], r["method"]) for r in rows}
    setups = {(r["dataset"], r["task_model"], r["n_images"]): r["setup"] for r in rows}
    for table in filter(is_published_table, sources):
        # a method that was run replaces all of the table's points, not only those with the same labels
        rows += [r for r in published_rows(table, setups) if (r["setup"], r["method"]) not in stored]
    if not rows:
        raise FcmbenchError(f"no evaluated results in {', '.join(map(str, sources))}; run `fcmbench run` first")
    # published rows have no date: they sort first, in the order given (the later table's point wins)
    frame = pd.DataFrame(rows).sort_values("evaluated_at", kind="stable")
    frame = frame.drop_duplicates(["setup", "method", "rate"], keep="last")
    return frame.sort_values(["dataset", "task_model", "method", "bpp"]).reset_index(drop=True)


def published_rows(table: Path, setups: dict[tuple, str]) -> list[dict]:
    """The points of an rd.csv an earlier report wrote. A point joins the stored setup with the same dataset, task
    model and image count, so it is compared with that setup's own points."""
    frame = read_report_csv(table, PUBLISHED_COLUMNS, f"published table {table}",
                            "pass an rd.csv that `fcmbench report` wrote")
    frame = frame.drop(columns=["setup", "evaluated_at", "source"], errors="ignore").astype({"rate": str})
    rows = frame.to_dict("records")
    for row in rows:
        key = (row["dataset"], row["task_model"], row["n_images"])
        row.update(setup=setups.get(key, "published:{}/{}/{}".format(*key)), evaluated_at="", source=str(table))
    return rows


def _rd_rows(store: Store) -> list[dict]:
    timing = {(r["setup"], r["method"], r["rate"]): r for r in store.query(
        "SELECT setup, method, rate, AVG(encode_s) AS enc, AVG(decode_s) AS dec FROM items "
        "GROUP BY setup, method, rate")}
    rows = []
    for r in store.query(
            "SELECT e.*, s.dataset, s.task_model FROM evaluations e JOIN setups s USING (setup)"):
        t = timing.get((r["setup"], r["method"], r["rate"]))
        rows.append({"dataset": r["dataset"], "task_model": r["task_model"], "setup": r["setup"],
                     "method": r["method"], "rate": r["rate"], "rate_value": r["rate_value"],
                     "n_images": r["n_images"], "bpp": bpp(r["bits"], r["pixels"]) if r["pixels"] else math.nan,
                     **json.loads(r["metrics"]),
                     "encode_s": t["enc"] if t else math.nan, "decode_s": t["dec"] if t else math.nan,
                     "evaluated_at": r["evaluated_at"]})
    return rows


def read_report_csv(path: Path, columns: list[str], what: str, hint: str) -> pd.DataFrame:
    """A CSV an earlier report wrote, holding ``columns``; one error naming ``what`` and the ``hint`` otherwise."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise FcmbenchError(f"{what} does not exist; {hint}") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise FcmbenchError(f"{what} is not a readable CSV ({err}); {hint}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FcmbenchError(f"{what} lacks the column(s) {', '.join(missing)}; {hint}")
    for column in [c for c in frame.columns if c in NUMBER_COLUMNS or "mAP" in c]:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        words = frame[column][numbers.isna() & frame[column].notna()]
        if len(words):
            raise FcmbenchError(f"{what}: column {column} holds {words.iloc[0]!r}, not a number; {hint}")
        frame[column] = numbers
    return frame


def published_points(rd: pd.DataFrame) -> list[dict]:
    """Per published table, the methods whose points the report took from it."""
    taken = rd[rd["evaluated_at"] == ""]
    return [{"table": table, "methods": ", ".join(sorted(group["method"].unique()))}
            for table, group in taken.groupby("source", sort=False)]


LEVEL_COLUMNS = ["setup", "method", "rate", "level", "bits", "pixels", "quality", "bpp"]


def level_table(sources: list[Path], rd: pd.DataFrame | None = None) -> pd.DataFrame:
    """Bits per pixel of each container segment (FPN level or header) per (setup, method, rate point), and the
    mean base-codec quality of each level where the encoder chose one per image (MFIBA). With ``rd``, also the
    levels.csv beside each published table, for the points ``rd`` took from it."""
    rows = []
    for _, store in stores(sources):
        for r in store.query("SELECT setup, method, rate, pixels, bytes_per_level, stream_info FROM items"):
            qualities = json.loads(r["stream_info"] or "{}").get("qualities", {})
            for level, size in json.loads(r["bytes_per_level"]).items():
                rows.append({"setup": r["setup"], "method": r["method"], "rate": r["rate"],
                             "level": "header" if level == HEADER_KEY else level,
                             "bits": 8 * size, "pixels": r["pixels"], "quality": qualities.get(level)})
    frame = pd.DataFrame(rows, columns=["setup", "method", "rate", "level", "bits", "pixels", "quality"])
    frame["quality"] = pd.to_numeric(frame["quality"])
    totals = frame.groupby(["setup", "method", "rate", "level"], sort=False).agg(
        bits=("bits", "sum"), pixels=("pixels", "sum"), quality=("quality", "mean")).reset_index()
    # pixels are summed once per level, so the ratio is the level's share of the dataset bpp
    totals["bpp"] = totals["bits"] / totals["pixels"]
    if rd is not None:
        published = [published_levels(table, rd) for table in filter(is_published_table, sources)]
        totals = pd.concat([totals, *(p for p in published if not p.empty)], ignore_index=True)
    return totals


def published_levels(table: Path, rd: pd.DataFrame) -> pd.DataFrame:
    """The levels.csv the report of a published rd.csv wrote beside it, joined to the points taken from that table
    (a point whose method and rate the table holds for several setups cannot be placed and is left out)."""
    path = table.with_name("levels.csv")
    if not path.is_file():
        return pd.DataFrame(columns=LEVEL_COLUMNS)
    levels = read_report_csv(path, [c for c in LEVEL_COLUMNS if c != "setup"],
                             f"{path} (beside the published table {table})",
                             "move it away or restore the one `fcmbench report` wrote")
    taken = rd.loc[rd["source"] == str(table), ["method", "rate", "setup"]]
    placed = taken[~taken.duplicated(["method", "rate"], keep=False)]
    levels = levels.drop(columns="setup", errors="ignore").astype({"rate": str})
    return levels.merge(placed, on=["method", "rate"])[LEVEL_COLUMNS]


def provenance(folders: list[Path]) -> list[dict]:
    """The newest run's provenance per results folder and setup."""
    found = []
    for folder, store in stores(folders):
        for r in store.query("SELECT setup, provenance, started_at FROM runs r1 WHERE id = "
                             "(SELECT MAX(id) FROM runs r2 WHERE r2.setup = r1.setup)"):
            found.append({"folder": str(folder), "setup": r["setup"], "started_at": r["started_at"],
                          **json.loads(r["provenance"])})
    return found


def cttc_table(rd: pd.DataFrame) -> pd.DataFrame:
    """The MPEG FCM CTTC template layout: one row per rate point, accuracy x 100."""
    frame = rd.sort_values(["dataset", "task_model", "method", "bpp"])
    out = pd.DataFrame({"Dataset": frame["dataset"], "Task model": frame["task_model"], "Method": frame["method"],
                        "Rate point": frame["rate"], "bpp": frame["bpp"]})
    for metric, column in (("bbox_mAP", "mAP (%)"), ("bbox_mAP50", "mAP50 (%)"), ("segm_mAP", "mask mAP (%)"),
                           ("keypoints_mAP", "keypoint mAP (%)")):
        if metric in frame:
            out[column] = frame[metric] * 100
    return out


def metric_columns(rd: pd.DataFrame) -> list[str]:
    return [c for c in rd.columns if c.split("_")[0] in ("bbox", "segm", "keypoints", "kitti")]


def headline_metrics(rd: pd.DataFrame) -> list[str]:
    """mAP and mAP50 of each task: the columns tables show (rd.csv keeps all)."""
    return [m for m in metric_columns(rd) if m.endswith(("_mAP", "_mAP50")) or m == "kitti_mod_AP40"]


def choose_anchor(rd: pd.DataFrame, anchor: str | None) -> str | None:
    methods = set(rd["method"])
    if anchor is not None:
        if anchor not in methods:
            raise FcmbenchError(f"anchor {anchor!r} has no results here; methods with results: "
                                f"{', '.join(sorted(methods))}")
        return anchor
    return next((m for m in ANCHOR_PREFERENCE if m in methods), None)


def bd_table(rd: pd.DataFrame, anchor: str, bd_method: str = "pchip", metrics: list[str] | None = None,
             monotone: bool = False, own_anchors: dict[str, str] | None = None,
             meaningful_from: float = MEANINGFUL_FROM) -> pd.DataFrame:
    """BD-rate of every method against ``anchor``, per setup and accuracy metric; a reason where none exists.
    ``monotone`` drops the points that do not raise accuracy above every cheaper point (and says which).
    ``own_anchors`` adds, for a method built on another (MFIBA on its tiled base codec), rows against that one.
    Each BD-rate carries the accuracy interval it integrates over and, against the uncompressed accuracy of its
    setup, its regime: an overlap whose top stays below ``meaningful_from`` of it is a low-accuracy comparison."""
    metrics = metrics or [m for m in ("bbox_mAP", "segm_mAP", "keypoints_mAP", "kitti_mod_AP40") if m in rd.columns]
    rows = []
    for (dataset, task_model, setup), group in rd.groupby(KEYS):
        for method, curve in group.groupby("method"):
            if method == UNCOMPRESSED:  # the reference every comparison is measured against, not a curve
                continue
            for against in dict.fromkeys((anchor, (own_anchors or {}).get(method))):
                if against is None or against == method or (against != anchor and against not in set(group["method"])):
                    continue
                base = group[group["method"] == against]
                for metric in metrics:
                    cell = _bd_cell(base, curve, metric, bd_method, monotone)
                    rows.append({"setup": setup, "dataset": dataset, "task_model": task_model, "method": method,
                                 "anchor": against,
                                 "metric": metric, **cell,
                                 **regime(cell, uncompressed_accuracy(group, metric), meaningful_from)})
    return pd.DataFrame(rows, columns=BD_COLUMNS)


def uncompressed_accuracy(group: pd.DataFrame, metric: str) -> float:
    """The accuracy of the setup's lossless ``raw`` point (NaN when the run had none)."""
    lossless = group.loc[group["method"] == UNCOMPRESSED, metric].dropna()
    return float(lossless.max()) if len(lossless) else math.nan


def regime(cell: dict, uncompressed: float, meaningful_from: float) -> dict:
    """Whether a BD-rate's overlap reaches ``meaningful_from`` of the uncompressed accuracy."""
    share = cell["overlap_high"] / uncompressed if uncompressed > 0 else math.nan
    if math.isnan(cell["bd_rate_pct"]):
        label = ""
    elif math.isnan(share):
        label = f"unknown: no uncompressed point ({UNCOMPRESSED}) in this setup"
    elif share < meaningful_from:
        label = LOW_ACCURACY
    else:
        label = "meaningful"
    return {"uncompressed": uncompressed, "overlap_share": share, "regime": label}


def is_low_accuracy(row: dict | pd.Series) -> bool:
    return row["regime"] == LOW_ACCURACY


def own_anchors(history: list[dict]) -> dict[str, str]:
    """Method -> the method it is built on and is also judged against, as the runs recorded it."""
    return {name: base for run in history for name, base in run.get("built_on", {}).items()}


def monotone_envelope(curve: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """Keep the points whose accuracy beats every cheaper point: the curve a user would operate on."""
    ordered = curve.dropna(subset=[metric]).sort_values("bpp")
    best, keep = -math.inf, []
    for accuracy in ordered[metric]:
        keep.append(accuracy > best)
        best = max(best, accuracy)
    return ordered[keep], list(ordered["rate"][[not k for k in keep]])


def _bd_cell(base: pd.DataFrame, curve: pd.DataFrame, metric: str, bd_method: str, monotone: bool = False) -> dict:
    dropped = []
    if monotone:
        base, dropped_base = monotone_envelope(base, metric)
        curve, dropped_test = monotone_envelope(curve, metric)
        dropped = [f"anchor {r}" for r in dropped_base] + dropped_test
    used = {"anchor_points": " ".join(base["rate"]), "test_points": " ".join(curve["rate"]),
            "overlap_low": math.nan, "overlap_high": math.nan}
    if base.empty:
        return {"bd_rate_pct": math.nan, **used, "note": "anchor has no results for this dataset and task model"}
    try:
        value, low, high = bd_rate_over(base["bpp"], base[metric], curve["bpp"], curve[metric], bd_method)
    except BDRateUnavailable as reason:
        return {"bd_rate_pct": math.nan, **used, "note": str(reason)}
    note = f"monotone fit dropped {', '.join(dropped)}" if dropped else ""
    return {"bd_rate_pct": round(value, 3), **used, "overlap_low": low, "overlap_high": high, "note": note}


def write_tables(rd: pd.DataFrame, bd: pd.DataFrame | None, out: Path, anchor: str | None = None) -> list[Path]:
    """rd.csv, bd_rate.csv, cttc.csv and report.md; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    public = rd.drop(columns=["setup", "evaluated_at", "source"])
    public.to_csv(out / "rd.csv", index=False, float_format="%.6g")
    cttc_table(rd).to_csv(out / "cttc.csv", index=False, float_format="%.4f")
    written = [out / "rd.csv", out / "cttc.csv"]
    summary = summary_rows(rd, bd, anchor)[0]
    markdown = ["# fcmbench report", "", f"## Summary (BD-rate against {anchor or '-'}, % [95 % interval])", "",
                markdown_summary(summary), "", "## RD points", "",
                public[["dataset", "task_model", "method", "rate", "n_images", "bpp",
                        *headline_metrics(rd)]]
                .to_markdown(index=False, floatfmt=".4f")]
    if bd is not None:
        bd = bd.drop(columns="setup")
        bd.to_csv(out / "bd_rate.csv", index=False, float_format="%.6g")
        written.append(out / "bd_rate.csv")
        markdown += ["", f"## BD-rate against {bd['anchor'].iloc[0] if len(bd) else '-'} (%)", "",
                     "A BD-rate whose accuracy overlap stays below the stated share of the uncompressed accuracy "
                     f"is marked *{LOW_ACCURACY}*: it compares the curves where the task has lost most of its "
                     "accuracy. The interval is the 95 % paired bootstrap interval over images.", "",
                     markdown_bd(bd)]
    (out / "report.md").write_text("\n".join(markdown) + "\n")
    return [*written, out / "report.md"]


def bd_text(row: dict | pd.Series) -> str:
    """A BD-rate as a reader should see it: its interval, and a low-accuracy comparison said in words."""
    if math.isnan(row["bd_rate_pct"]):
        return "n/a"
    text = f"{row['bd_rate_pct']:+.2f}"
    if not math.isnan(row.get("ci_low", math.nan)):
        text += f" [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    return f"({LOW_ACCURACY}) {text}" if is_low_accuracy(row) else text


def overlap_text(row: dict | pd.Series) -> str:
    if math.isnan(row["overlap_low"]):
        return ""
    text = f"{row['overlap_low']:.4f}..{row['overlap_high']:.4f}"
    if not math.isnan(row["overlap_share"]):
        text += f" ({100 * row['overlap_low'] / row['uncompressed']:.0f}-{100 * row['overlap_share']:.0f} %)"
    return text


def summary_rows(rd: pd.DataFrame, bd: pd.DataFrame | None, anchor: str | None) -> list[dict]:
    """The report at a glance: per setup and method, its bpp range and, per BD metric, its best accuracy (as a
    share of the uncompressed one) and its BD-rate against ``anchor`` with the interval, marked when it only
    covers the low-accuracy regime."""
    metrics = list(dict.fromkeys(bd["metric"])) if bd is not None and len(bd) else headline_metrics(rd)[:1]
    rows = []
    for (dataset, task_model, setup), group in rd.groupby(KEYS):
        for method, curve in group.groupby("method"):
            cells = []
            for metric in metrics:
                best = curve[metric].max() if metric in curve else math.nan
                reference = uncompressed_accuracy(group, metric) if metric in group else math.nan
                match = None if bd is None else bd[(bd["setup"] == setup) & (bd["method"] == method)
                                                   & (bd["anchor"] == anchor) & (bd["metric"] == metric)]
                row = match.iloc[0] if match is not None and len(match) else None
                cells.append({"best": best, "share": best / reference if reference > 0 else math.nan,
                              "bd": "" if row is None else bd_text(row),
                              "low": row is not None and is_low_accuracy(row)})
            rows.append({"dataset": dataset, "task_model": task_model, "method": method,
                         "bpp": f"{curve['bpp'].min():.4g}–{curve['bpp'].max():.4g}", "cells": cells})
    return [{"metrics": metrics, "rows": rows}]


def markdown_summary(summary: dict) -> str:
    table = pd.DataFrame([{"dataset": r["dataset"], "task model": r["task_model"], "method": r["method"],
                           "bpp": r["bpp"],
                           **{f"best {m}": "n/a" if math.isnan(c["best"]) else
                              f"{c['best']:.4f}" + ("" if math.isnan(c["share"]) else f" ({100 * c['share']:.0f} %)")
                              for m, c in zip(summary["metrics"], r["cells"], strict=True)},
                           **{f"BD {m}": c["bd"] for m, c in zip(summary["metrics"], r["cells"], strict=True)}}
                          for r in summary["rows"]])
    return table.to_markdown(index=False, disable_numparse=True)


def markdown_bd(bd: pd.DataFrame) -> str:
    table = pd.DataFrame({"dataset": bd["dataset"], "task model": bd["task_model"], "method": bd["method"],
                          "against": bd["anchor"], "metric": bd["metric"],
                          "BD-rate % [95 % CI]": [bd_text(r) for _, r in bd.iterrows()],
                          "accuracy overlap (of uncompressed)": [overlap_text(r) for _, r in bd.iterrows()],
                          "regime": bd["regime"], "note": bd["note"]})
    return table.to_markdown(index=False, disable_numparse=True)  # "+1.50" stays as written


def print_tables(rd: pd.DataFrame, bd: pd.DataFrame | None, console: Console) -> bool:
    """One RD table per dataset x task model, then the BD-rates; True when a table was wider than the console
    (its cells are wrapped, never cut: the caller says where the files with the full tables are)."""
    metrics = headline_metrics(rd)
    wrapped = False
    for (dataset, task_model, _), group in rd.groupby(KEYS):
        table = console_table(f"RD points: {dataset} / {task_model}",
                              ["method", "rate", "images", "bpp", *metrics, "enc s/img", "dec s/img"], left=2)
        for _, row in group.iterrows():
            table.add_row(row["method"], str(row["rate"]), str(row["n_images"]), f"{row['bpp']:.4f}",
                          *(_fmt(row[m]) for m in metrics), f"{row['encode_s']:.3f}", f"{row['decode_s']:.3f}")
        wrapped |= show(table, console)
    if bd is None or bd.empty:
        return wrapped
    table = console_table("BD-rate (negative = fewer bits for the same accuracy; [95 % bootstrap interval])",
                          ["dataset", "task_model", "method", "against", "metric", "BD-rate %", "accuracy overlap",
                           "note"])
    for _, row in bd.iterrows():
        value = bd_text(row)
        table.add_row(row["dataset"], row["task_model"], row["method"], row["anchor"], row["metric"],
                      f"[dim]{value}[/]" if is_low_accuracy(row) else value, overlap_text(row), row["note"])
    return show(table, console) or wrapped


def console_table(title: str, columns: list[str], left: int | None = None) -> Table:
    """Cells fold onto more lines when the console is narrow: no value is ever cut or ellipsised."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        justify = "right" if left is not None and i >= left else "left"
        table.add_column(column, justify=justify, overflow="fold")
    return table


def show(table: Table, console: Console) -> bool:
    """Print the table; True when it is wider than the console (its cells were wrapped)."""
    console.print(table)
    unbounded = console.options.update(max_width=10**6)  # measured as if the console were as wide as needed
    return console.measure(table, options=unbounded).maximum > console.width


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
