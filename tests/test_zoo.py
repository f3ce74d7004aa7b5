"""One lookup for every built-in learned method's network: ``zoo.networks.load(method, quality, options)``."""

import pytest

from fcmbench.core.codec import CodecOptions
from fcmbench.core.errors import FcmbenchError
from fcmbench.models.lmsfc import LMSFCContext
from fcmbench.zoo.networks import ELIC, TCM, load


def test_the_shipped_networks_load_by_method_quality_and_task_model():
    shapes = CodecOptions(task_model="shapes_rcnn")
    assert isinstance(load("lmsfc", 1, shapes), LMSFCContext)
    image = load("tcm", 3, CodecOptions())  # image codecs: no task model
    assert TCM.describe(image).startswith("LIC-TCM N=16 M=32")
    assert ELIC.describe(load("elic-feat", 1, shapes)).startswith("ELIC N=")
    assert load("tcm", 3, CodecOptions()) is image  # loaded once


def test_what_the_zoo_does_not_hold_is_named(tmp_path):
    with pytest.raises(FcmbenchError, match="the zoo holds no networks of method 'half'"):
        load("half", 1, CodecOptions())
    with pytest.raises(FcmbenchError, match=r"no tcm-feat checkpoint for quality 2 and task model t: expected "
                                            r".*tcm-feat/t/q2.pt. Make it with `fcmbench train tcm-feat --quality 2"):
        load("tcm-feat", 2, CodecOptions(task_model="t", checkpoints=tmp_path))
