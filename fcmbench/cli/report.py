"""``fcmbench report``: RD points, BD-rates with their validity and intervals, the HTML page."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fcmbench.cli.common import Commands, share, stdout_console
from fcmbench.core import failpoints, registry
from fcmbench.core.errors import FcmbenchError

NAME = "report"


def add(commands: Commands, defaults: dict | None = None) -> argparse.ArgumentParser:
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
    return report


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


def command(args: argparse.Namespace) -> None:
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
    wrapped = print_tables(rd, bd, out)
    if anchor is None:
        out.print("no BD-rate: no anchor given (--anchor NAME) and none of vtm-feature, vtm-image, quant was run")
    elif bd.empty:
        out.print(f"no BD-rate: no method besides the anchor {anchor} and the uncompressed reference raw")
    out.print(f"wrote {', '.join(p.name for p in written)} in {args.out}")
    if wrapped:
        out.print(f"the tables are wider than this console ({out.width} columns), so their cells are wrapped: "
                  f"report.md in {args.out} holds them on one line per row")
    out.print(f"report: {page.resolve()}")
