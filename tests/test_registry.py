import subprocess
import sys

import pytest

from fcmbench.core import registry
from fcmbench.core.codec import FeatureCodec, RatePoint
from fcmbench.core.errors import FcmbenchError


def test_builtins_are_found_through_entry_points():
    assert {"raw", "quant"} <= set(registry.methods.names())
    assert "shapes_rcnn" in registry.task_models.names()
    assert {"coco", "shapes"} <= set(registry.datasets.names())
    assert registry.methods.get("quant")().rate_points()[0] == RatePoint("2bit", 2)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(FcmbenchError, match=r"unknown method 'nope'; known methods: .*quant.*raw"):
        registry.methods.resolve("raw,nope")
    with pytest.raises(FcmbenchError, match="unknown dataset 'kitty'"):
        registry.datasets.get("kitty")


def test_decorator_registers_in_process():
    local = registry.Registry("method", "fcmbench.tests.none")

    @local.register("identity")
    class Identity(FeatureCodec):
        name = "identity"

        def rate_points(self):
            return [RatePoint("id", 0)]

        def encode(self, x, rate):
            return b""

        def decode(self, data):
            return None

    assert local.names() == ["identity"]
    assert local.get("identity") is Identity
    assert local.resolve("all") == ["identity"]


def test_listing_names_imports_no_torch():
    code = ("import sys; from fcmbench.core import registry; "
            "names = registry.methods.names() + registry.task_models.names() + registry.datasets.names(); "
            "assert 'torch' not in sys.modules, 'listing imported torch'; print(len(names))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_cli_starts_without_torch():
    # --help and list stay fast: the CLI module and the registry's listing import no torch
    code = "import sys, fcmbench.cli; assert 'torch' not in sys.modules, 'fcmbench.cli imported torch'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_all_runs_an_aliased_method_once():
    from fcmbench.core.registry import methods

    everything = methods.resolve("all")
    assert "mfiba-elic" in everything and "mfiba" not in everything
    assert methods.get("mfiba") is methods.get("mfiba-elic")
    # an alias is a pointer: results, caches and reports know the canonical name only
    assert methods.resolve("mfiba") == ["mfiba-elic"]
    assert methods.resolve("mfiba,lmsfc,mfiba-elic") == ["mfiba-elic", "lmsfc"]
