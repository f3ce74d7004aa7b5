"""`fcmbench run --config experiment.toml`: every run option from a file, flags over it, bad keys named."""

import json
import sqlite3

import pytest

from conftest import run_cli
from fcmbench.cli import parse
from fcmbench.cli.run import codec_settings
from fcmbench.core.errors import FcmbenchError


def experiment(tmp_path, text: str):
    path = tmp_path / "experiment.toml"
    path.write_text(text)
    return path


def test_the_file_sets_run_options_and_flags_override_it(tmp_path):
    path = experiment(tmp_path, 'methods = ["lmsfc", "raw"]\ndataset = "shapes"\nout = "runs/x"\nlimit = 5\n'
                                'executor = "dask"\nworkers = 2\nno-reference = true\n'
                                '[codec_opt.vtm-feature]\npreset = "faster"\njobs = 3\n')
    args = parse(["run", "--config", str(path), "--limit", "3"])
    assert args.methods == "lmsfc,raw" and args.dataset == "shapes" and str(args.out) == "runs/x"
    assert args.limit == 3  # the flag wins
    assert args.executor == "dask" and args.workers == 2 and args.no_reference is True
    assert args.codec_opt == [("vtm-feature", "preset", "faster"), ("vtm-feature", "jobs", "3")]
    flags = parse(["run", "--config", str(path), "--codec-opt", "vtm-feature.preset=slow"]).codec_opt
    assert codec_settings(flags) == {"vtm-feature": {"preset": "slow", "jobs": "3"}}  # the flag wins
    assert parse(["run", "--config", str(path)]).limit == 5


@pytest.mark.parametrize(("text", "message"), [
    ("methodz = 'raw'\n", "unknown key 'methodz'; valid keys: "),
    ("limit = 'many'\n", "limit = 'many' is not valid"),
    ("executor = 'slurm'\n", "choose one of local, dask"),
    ("no_reference = 'yes'\n", "no_reference is a switch"),
    ("limit = [\n", "is not valid TOML"),
    ("codec_opt = ['vtm-feature:preset']\n", "codec_opt: 'vtm-feature:preset' is not METHOD.KEY=VALUE"),
    ("codec_opt = 3\n", "codec_opt takes a table per method"),
])
def test_a_bad_experiment_file_is_one_error_naming_the_key(tmp_path, text, message):
    with pytest.raises(FcmbenchError, match="experiment file .*" + message.replace("[", r"\[").replace("(", r"\(")):
        parse(["run", "--config", str(experiment(tmp_path, text))])


def test_run_from_an_experiment_file_records_its_resolved_configuration(tmp_path, tiny_coco):
    out = tmp_path / "run"
    path = experiment(tmp_path, f'methods = ["raw"]\ndataset = "coco"\nimages = "{tiny_coco[0]}"\n'
                                f'annotations = "{tiny_coco[1]}"\ntask_model = "shapes_rcnn"\nweights = "none"\n'
                                f'limit = 2\nout = "{out}"\n')
    run_cli("run", "--config", path, "--limit", "1")
    with sqlite3.connect(out / "results.sqlite") as db:
        provenance = json.loads(db.execute("SELECT provenance FROM runs").fetchone()[0])
        images = db.execute("SELECT COUNT(DISTINCT image_id) FROM items").fetchone()[0]
    assert images == 1  # the flag over the file's limit = 2
    assert provenance["configuration"]["limit"] == 1 and provenance["configuration"]["config"] == str(path)
    run_cli("report", "--out", out)
    assert "configuration" in (out / "report.html").read_text()

    missing = run_cli("run", "--config", experiment(tmp_path, 'methods = "raw"\n'), check=False)
    assert missing.returncode == 2 and "run needs --dataset, --out" in missing.stderr
    assert "Traceback" not in missing.stderr
