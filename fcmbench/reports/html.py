"""The self-contained HTML report: seaborn plots inlined as SVG, tables, provenance (jinja2, autoescaped)."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from fcmbench import __version__  # noqa: E402
from fcmbench.reports.tables import (  # noqa: E402
    KEYS,
    MEANINGFUL_FROM,
    UNCOMPRESSED,
    headline_metrics,
    metric_columns,
    overlap_text,
    published_points,
    summary_rows,
)

METRIC_TITLES = {"bbox_mAP": "box mAP@[.5:.95]", "bbox_mAP50": "box mAP@0.5", "segm_mAP": "mask mAP@[.5:.95]",
                 "keypoints_mAP": "keypoint mAP@[.5:.95]",
                 "kitti_mod_AP40": "KITTI moderate AP|R40 (mean of Car, Pedestrian, Cyclist; 0-100)"}
plt.rcParams["svg.fonttype"] = "path"  # text as outlines: no fonts needed, and no markup from names


def svg(figure: plt.Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


# methods of one family share a palette, so a reader finds the family first and the member by its marker
FAMILIES = {"anchors": (("raw", "quant", "vtm-feature", "vtm-image"), "Greys"),
            "L-MSFC": (("lmsfc", "lmsfc-nocm", "tamsf"), "Blues"),
            "ELIC": (("elic", "elic-feat", "mfiba-elic", "mfiba"), "Greens"),
            "LIC-TCM": (("tcm", "tcm-feat", "mfiba-tcm"), "Oranges")}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]


def method_styles(methods: list[str]) -> dict[str, tuple]:
    """Colour and marker per method: family palettes for the built-ins, a qualitative palette for the rest."""
    styles, others = {}, [m for m in methods if not any(m in names for names, _ in FAMILIES.values())]
    for names, palette in FAMILIES.values():
        present = [m for m in names if m in methods]
        for k, (method, colour) in enumerate(zip(present, sns.color_palette(palette, len(present) + 2)[2:],
                                                 strict=True)):
            styles[method] = (colour, MARKERS[k % len(MARKERS)])
    for k, (method, colour) in enumerate(zip(others, sns.color_palette("tab10", len(others)), strict=True)):
        styles[method] = (colour, MARKERS[(k + 4) % len(MARKERS)])
    return styles


def family_of(method: str) -> str:
    return next((family for family, (names, _) in FAMILIES.items() if method in names), "other methods")


def rd_plot(group: pd.DataFrame, metric: str, title: str, facet: bool = False) -> str:
    """Every method's curve, styled by family, the legend outside the axes, and the lossless accuracy (``raw``)
    as a reference line rather than a point. ``facet``: one panel per family, each with the anchors beside it."""
    data = group.dropna(subset=[metric]).sort_values("bpp")
    curves = data[data["method"] != UNCOMPRESSED]
    styles = method_styles(sorted(curves["method"].unique()))
    lossless = data.loc[data["method"] == UNCOMPRESSED, metric]
    families = sorted({family_of(m) for m in curves["method"]} - {"anchors"}) if facet else []
    if not families:
        figure, axes = plt.subplots(figsize=(7.6, 4.2))
        draw_curves(axes, curves, styles, metric, lossless, title)
        return svg(figure)
    figure, panels = plt.subplots(1, len(families), figsize=(4.2 * len(families) + 1.6, 4.0), sharex=True,
                                  sharey=True, squeeze=False)
    for axes, family in zip(panels[0], families, strict=True):
        mine = curves[curves["method"].map(family_of).isin([family, "anchors"])]
        draw_curves(axes, mine, styles, metric, lossless, f"{title}: {family}")
        if axes is not panels[0][0]:
            axes.set_ylabel("")
    return svg(figure)


def draw_curves(axes: plt.Axes, curves: pd.DataFrame, styles: dict, metric: str, lossless: pd.Series,
                title: str) -> None:
    for method, curve in curves.groupby("method", sort=True):
        colour, marker = styles[method]
        axes.plot(curve["bpp"], curve[metric], marker=marker, color=colour, label=method, markersize=6,
                  markeredgecolor="black", markeredgewidth=0.4)
        if f"{metric}_lo" in curve and curve[f"{metric}_lo"].notna().any():
            axes.vlines(curve["bpp"], curve[f"{metric}_lo"], curve[f"{metric}_hi"], color=colour, alpha=0.5,
                        linewidth=1)
    if len(lossless):
        axes.axhline(float(lossless.max()), color="black", linestyle="--", linewidth=1,
                     label=f"uncompressed ({lossless.max():.3f})")
    axes.set_xscale("log")
    # labels at 1, 2 and 5 per decade, plainly written: matplotlib's default minor labels overlap
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set(xlabel="bits per pixel (log scale)", ylabel=METRIC_TITLES.get(metric, metric), title=title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(title="method (bars: 95 % interval)", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")


def level_plot(levels: pd.DataFrame, method: str) -> str:
    """Stacked bars: bpp of each FPN level (and the container header) at each rate point."""
    table = levels.pivot_table(index="rate", columns="level", values="bpp", aggfunc="sum", sort=False)
    table = table.loc[table.sum(axis=1).sort_values().index]
    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    colours = sns.color_palette("viridis", len(table.columns))
    table.plot.bar(stacked=True, ax=axes, color=colours, width=0.75)
    axes.set(xlabel="rate point", ylabel="bits per pixel", title=f"{method}: bits per level")
    axes.tick_params(axis="x", labelrotation=0)
    axes.legend(title="level", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return svg(figure)


def chosen_qualities(levels: pd.DataFrame) -> list[str]:
    """Per rate point, the mean base quality each level was coded at (only codecs that choose per level)."""
    chosen = levels.dropna(subset=["quality"])
    if chosen.empty or (chosen.groupby("rate")["quality"].nunique() <= 1).all():
        return []
    return [f"{rate}: " + ", ".join(f"{r.level} q{r.quality:.2f}" for r in rows.itertuples())
            for rate, rows in chosen.groupby("rate", sort=False)]


def build_sections(rd: pd.DataFrame, levels: pd.DataFrame, facet: bool = False) -> list[dict]:
    """One section per dataset x task model, each with its RD plots (one panel per family with ``facet``) and
    per-level plots."""
    sns.set_theme(style="whitegrid", context="notebook")
    metrics = [m for m in METRIC_TITLES if m in metric_columns(rd) and rd[m].notna().any()]
    sections = []
    for (dataset, task_model, setup), group in rd.groupby(KEYS):
        plots = [{"title": f"{dataset} / {task_model}: {METRIC_TITLES[m]}", "svg":
                  rd_plot(group, m, f"{dataset} / {task_model}", facet)} for m in metrics if group[m].notna().any()]
        level_plots = []
        for method in sorted(group["method"].unique()):
            mine = levels[(levels["setup"] == setup) & (levels["method"] == method)]
            if mine["level"].nunique() > 2:  # feature codecs: one segment per level plus the header
                level_plots.append({"title": method, "svg": level_plot(mine, method),
                                    "qualities": chosen_qualities(mine)})
        sections.append({"dataset": dataset, "task_model": task_model, "plots": plots, "level_plots": level_plots,
                         "rows": group.to_dict("records")})
    return sections


def render_report(rd: pd.DataFrame, bd: pd.DataFrame | None, levels: pd.DataFrame, runs: list[dict],
                  anchor: str | None, bd_method: str, out: Path, meaningful_from: float = MEANINGFUL_FROM,
                  facet: bool = False) -> Path:
    env = Environment(loader=PackageLoader("fcmbench.reports", "templates"), autoescape=select_autoescape(["j2"]))
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    env.filters["overlap"] = overlap_text
    metrics = [m for m in headline_metrics(rd) if rd[m].notna().any()]
    html = env.get_template("report.html.j2").render(
        sections=build_sections(rd, levels, facet), metrics=metrics, bd=None if bd is None else bd.to_dict("records"),
        summary=summary_rows(rd, bd, anchor)[0],
        anchor=anchor, bd_method=bd_method, meaningful_from=meaningful_from, runs=runs, published=published_points(rd),
        version=__version__,
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
        warnings=sorted({w for run in runs for w in run.get("warnings", [])}))
    path = out / "report.html"
    path.write_text(html)
    return path


def _num(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.2f} %"
