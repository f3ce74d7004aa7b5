import pytest
from hypothesis import given
from hypothesis import strategies as st

from fcmbench.core.bitstream import HEADER_KEY, Container
from fcmbench.core.errors import BitstreamError, FcmbenchError
from fcmbench.core.limits import MAX_IMAGE_SIDE

names = st.text(min_size=1, max_size=12).filter(lambda name: name != HEADER_KEY)
sizes = st.tuples(st.integers(1, MAX_IMAGE_SIDE), st.integers(1, MAX_IMAGE_SIDE))


@given(codec=names, original=sizes, network=sizes, header=st.binary(max_size=64),
       segments=st.dictionaries(names, st.binary(max_size=256), max_size=8))
def test_container_round_trip_and_counts(codec, original, network, header, segments):
    box = Container(codec, original, network, header, segments)
    data = box.to_bytes()
    back = Container.from_bytes(data, expected_codec=codec)
    assert back == box
    sizes = back.bytes_per_segment()
    assert sum(sizes.values()) == len(data)
    assert all(sizes[name] == len(payload) for name, payload in segments.items())
    assert sizes[HEADER_KEY] > 0


@given(data=st.binary(max_size=64))
def test_random_bytes_never_crash_the_parser(data):
    try:
        Container.from_bytes(data)
    except FcmbenchError:
        pass


@given(cut=st.integers(0, 40))
def test_truncation_is_reported(cut):
    data = Container("raw", (4, 4), (4, 4), b"hdr", {"0": b"x" * 20}).to_bytes()
    with pytest.raises(FcmbenchError, match="corrupt bitstream|truncated"):
        Container.from_bytes(data[:cut])


def test_wrong_codec_and_trailing_bytes_are_rejected():
    data = Container("quant", (4, 4), (4, 4)).to_bytes()
    with pytest.raises(FcmbenchError, match="written by codec 'quant'"):
        Container.from_bytes(data, expected_codec="raw")
    with pytest.raises(FcmbenchError, match="unexpected bytes"):
        Container.from_bytes(data + b"\0")


@pytest.mark.parametrize(("original", "network", "field"), [
    ((0, 4), (4, 4), "original image height 0"), ((4, 65535), (4, 4), "original image width 65535"),
    ((4, 4), (4, 0), "network input width 0"), ((4, 4), (MAX_IMAGE_SIDE + 1, 4), "network input height"),
])
def test_container_sizes_outside_the_limits_are_named(original, network, field):
    data = Container("raw", original, network).to_bytes()
    with pytest.raises(BitstreamError, match=field):
        Container.from_bytes(data)


def test_a_segment_named_twice_is_rejected():
    data = bytearray(Container("raw", (4, 4), (4, 4), b"", {"a": b"1", "b": b"2"}).to_bytes())
    at = bytes(data).index(b"\x01b")
    data[at + 1] = ord("a")
    with pytest.raises(BitstreamError, match="segment 'a' appears twice"):
        Container.from_bytes(bytes(data))


def test_the_limits_reject_what_a_decoder_could_not_survive():
    """Without the checks these sizes mean tensors of gigabytes: the limits stop them before any allocation."""
    from fcmbench.core.limits import MAX_FEATURE_VALUES, check_level_shapes

    with pytest.raises(BitstreamError, match="level 'p2' height 65535"):
        check_level_shapes({"p2": (256, 65535, 64)}, (4096, 4096))
    with pytest.raises(BitstreamError, match=f"at most {MAX_FEATURE_VALUES}"):
        check_level_shapes({str(i): (2048, 4096, 4096) for i in range(2)}, (4096, 4096))
