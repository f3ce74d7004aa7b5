"""The committed real-COCO report (docs/results/coco-val96-ssd-fpnlite) and the script that reproduces it stay in
step with the code: the script parses, uses only options the CLI has, and the report covers every method."""

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from fcmbench.cli import build_parser
from fcmbench.core import registry

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "coco-val96-ssd-fpnlite"
SCRIPT = RESULTS / "reproduce.sh"


def cli_options() -> set[str]:
    """Every --option of every fcmbench subcommand."""
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    return {flag for sub in commands.choices.values() for action in sub._actions for flag in action.option_strings}


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_reproduce_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_reproduce_script_uses_only_existing_cli_options():
    commands = [line.split("#")[0] for line in SCRIPT.read_text().splitlines()]
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", "\n".join(commands)))
    assert used, "no option found: the pattern no longer matches the script"
    assert used - cli_options() == set()


def test_published_report_covers_every_method():
    rd = pd.read_csv(RESULTS / "rd.csv")
    bd = pd.read_csv(RESULTS / "bd_rate.csv")
    built_in = [name for name, entry in registry.methods._entry_points().items() if entry.value.startswith("fcmbench.")]
    methods = set(registry.methods.without_aliases(built_in))
    # methods whose published points rest on a network since corrected are withdrawn, and the README says so
    withdrawn_line = next((line for line in (RESULTS / "README.md").read_text().splitlines()
                           if line.startswith("Withdrawn until rerun:")), "")
    withdrawn = set(re.findall(r"`([a-z0-9-]+)`", withdrawn_line))
    assert methods - withdrawn <= set(rd["method"]) and not withdrawn & set(rd["method"])
    against_anchor = bd[(bd["anchor"] == "vtm-feature") & (bd["metric"] == "bbox_mAP")]
    assert set(against_anchor["method"]) == set(rd["method"]) - {"vtm-feature", "raw"}
    # every BD cell holds a number or says why there is none, and every number says whether it is meaningful
    assert (against_anchor["bd_rate_pct"].notna() | against_anchor["note"].notna()).all()
    numbers = against_anchor[against_anchor["bd_rate_pct"].notna()]
    assert numbers["regime"].isin(["meaningful", "low-accuracy regime"]).all()
    assert ((numbers["overlap_share"] < 0.8) == (numbers["regime"] == "low-accuracy regime")).all()


def test_every_point_and_every_bd_rate_carries_its_interval():
    rd = pd.read_csv(RESULTS / "rd.csv")
    bd = pd.read_csv(RESULTS / "bd_rate.csv")
    # every point comes from one results store run with the bootstrap (none read from an earlier table)
    assert rd["bbox_mAP_lo"].notna().all() and rd["bbox_mAP_hi"].notna().all()
    assert ((rd["bbox_mAP_lo"] <= rd["bbox_mAP"]) & (rd["bbox_mAP"] <= rd["bbox_mAP_hi"])).all()
    numbers = bd[bd["bd_rate_pct"].notna()]
    assert len(numbers) and numbers["ci_low"].notna().all() and (numbers["ci_low"] <= numbers["ci_high"]).all()
