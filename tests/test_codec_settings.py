"""Each codec declares its own settings as a dataclass; `--codec-opt METHOD.KEY=VALUE` sets them, checked."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import run_cli
from fcmbench.codecs.anchors.vtm_feature import TASK_QPS, VTMFeatureAnchor
from fcmbench.codecs.learned.lmsfc import LMSFCCodec, LMSFCNoContextCodec
from fcmbench.core.codec import CodecOptions, ImageCodec, RatePoint, settings_of
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.registry import methods


def vvc(**values) -> VTMFeatureAnchor:
    return VTMFeatureAnchor(CodecOptions(settings={"vtm-feature": values}))


def test_settings_are_typed_from_strings():
    settings = vvc(preset="faster", jobs="4", vtm_dir="/opt/VTM").settings
    assert (settings.preset, settings.jobs, settings.vtm_dir) == ("faster", 4, Path("/opt/VTM"))
    assert vvc().settings.preset == "medium" and vvc().settings.vtm_dir is None
    assert LMSFCCodec(CodecOptions(settings={"lmsfc": {"order": "raster"}})).settings.order == "raster"


@pytest.mark.parametrize(("values", "message"), [
    ({"presett": "fast"}, r"vtm-feature has no setting 'presett'; its settings: preset, vtm_dir, jobs"),
    ({"preset": "quick"}, r"vtm-feature.preset=quick: use one of faster, fast, medium, slow, slower"),
    ({"jobs": "two"}, r"vtm-feature.jobs=two: not a valid int"),
    ({"jobs": "0"}, r"vtm-feature.jobs=0: give 1 or more encoder processes"),
])
def test_a_bad_setting_is_one_error_naming_the_valid_ones(values, message):
    with pytest.raises(FcmbenchError, match=message):
        vvc(**values)


def test_a_codec_without_settings_says_so():
    with pytest.raises(FcmbenchError, match="lmsfc-nocm has no setting 'order'; it has no settings"):
        LMSFCNoContextCodec(CodecOptions(settings={"lmsfc-nocm": {"order": "raster"}}))


@dataclass(frozen=True)
class Switch:
    on: bool = False


def test_a_switch_takes_true_or_false():
    assert settings_of("x", Switch, {"on": "yes"}).on is True and settings_of("x", Switch, {"on": False}).on is False
    with pytest.raises(FcmbenchError, match=r"x.on=maybe: use true or false"):
        settings_of("x", Switch, {"on": "maybe"})


def test_changed_settings_are_part_of_a_learned_codecs_identity(tmp_path):
    default = LMSFCCodec(CodecOptions(checkpoints=tmp_path)).identity(RatePoint("q1", 1))
    raster = LMSFCCodec(CodecOptions(checkpoints=tmp_path, settings={"lmsfc": {"order": "raster"}}))
    assert raster.identity(RatePoint("q1", 1)) == default + " order=raster"
    assert "order" not in default


def test_rate_points_belong_to_the_instance():
    assert [p.value for p in VTMFeatureAnchor().rate_points()] == [45, 43, 41, 39, 37, 35]
    ssd = VTMFeatureAnchor(CodecOptions(task_model="ssd_mobilenet_fpnlite")).rate_points()
    assert [p.value for p in ssd] == sorted(TASK_QPS["ssd_mobilenet_fpnlite"], reverse=True)
    assert vvc().parse_rate("qp30").value == 30 and vvc().parse_rate("q3") is None
    assert isinstance(methods.get("vtm-image")(), ImageCodec)


@pytest.mark.slow
def test_list_shows_the_task_models_points_and_every_setting():
    listing = run_cli("list", "--task-model", "ssd_mobilenet_fpnlite").stdout
    row = next(line for line in listing.splitlines() if line.strip("│ ").startswith("vtm-feature"))
    assert "qp51" in row and "preset=medium" in row and "jobs=2" in row
    assert "qp51" not in next(line for line in run_cli("list").stdout.splitlines() if "vtm-feature" in line)


@pytest.mark.slow
def test_a_bad_codec_opt_on_the_command_line_exits_2_without_a_traceback(tmp_path):
    for option, message in (("vtm-feature.preset=quick", "use one of faster"),
                            ("vtm-feature=faster", "is not METHOD.KEY=VALUE"),
                            ("vtm-featur.preset=fast", "unknown method 'vtm-featur'")):
        result = run_cli("run", "--methods", "vtm-feature", "--dataset", "shapes", "--limit", "1", "--codec-opt",
                         option, "--out", tmp_path / "out", check=False)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "out").exists()
