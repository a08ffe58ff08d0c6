"""Property-based checks: no input makes IDX parsing crash, hang or mis-shape."""

import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fmnist_pipeline.data import check_split, load_idx_split, parse_idx
from fmnist_pipeline.errors import IdxFormatError
from tests.conftest import idx_bytes

FAST = settings(max_examples=300, deadline=None)


def parse_or_reject(payload: bytes):
    """Parse, or return the IdxFormatError; any other exception fails the test."""
    try:
        return parse_idx(payload, "fuzz.idx")
    except IdxFormatError as error:
        assert str(error).startswith("fuzz.idx: ")
        return error


@FAST
@given(st.binary(max_size=512))
def test_random_bytes_parse_to_a_consistent_array_or_a_clear_error(payload):
    result = parse_or_reject(payload)
    if isinstance(result, np.ndarray):
        ndim = payload[3]
        dims = struct.unpack(f">{ndim}I", payload[4 : 4 + 4 * ndim])
        assert result.shape == dims
        assert result.dtype == np.uint8
        assert len(payload) == 4 + 4 * ndim + result.size


@FAST
@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=3),
    st.data(),
)
def test_truncated_or_padded_files_are_rejected(dims, data):
    array = np.zeros(dims, np.uint8)
    payload = idx_bytes(array)
    cut = data.draw(st.integers(0, len(payload) - 1))
    assert isinstance(parse_or_reject(payload[:cut]), IdxFormatError)
    extra = data.draw(st.binary(min_size=1, max_size=16))
    assert isinstance(parse_or_reject(payload + extra), IdxFormatError)


@FAST
@given(st.binary(min_size=2, max_size=2).filter(lambda b: b != b"\x00\x00"))
def test_wrong_magic_numbers_are_rejected(prefix):
    payload = idx_bytes(np.zeros((2, 2), np.uint8))
    error = parse_or_reject(prefix + payload[2:])
    assert isinstance(error, IdxFormatError) and "magic number" in str(error)


@FAST
@given(
    st.integers(0, 255).filter(lambda code: code != 0x08),
)
def test_element_types_other_than_unsigned_byte_are_rejected(code):
    payload = bytearray(idx_bytes(np.zeros((3,), np.uint8)))
    payload[2] = code
    error = parse_or_reject(bytes(payload))
    assert isinstance(error, IdxFormatError) and "unsigned byte" in str(error)


@FAST
@given(
    st.integers(1, 8),
    st.integers(1, 8),
    st.lists(st.integers(0, 255), min_size=1, max_size=8),
)
def test_split_checks_catch_count_and_label_mismatches(n_images, n_labels, labels):
    images = np.zeros((n_images, 28, 28), np.uint8)
    labels = np.resize(np.array(labels, np.uint8), n_labels)
    valid = n_images == n_labels and labels.max() <= 9
    try:
        check_split(images, labels, "split")
    except IdxFormatError as error:
        assert not valid
        assert ("labels" in str(error)) or ("label " in str(error))
    else:
        assert valid


@FAST
@given(
    st.integers(0, 6),
    st.integers(0, 6),
    st.lists(st.integers(0, 255), min_size=1, max_size=6),
    st.booleans(),
)
def test_idx_files_on_disk_load_as_a_split_or_fail_naming_them(
    n_images, n_labels, labels, compress
):
    images = np.full((n_images, 28, 28), 7, np.uint8)
    labels = np.resize(np.array(labels, np.uint8), n_labels)
    with tempfile.TemporaryDirectory() as directory:
        suffix = ".gz" if compress else ""
        images_path = Path(directory) / f"images-idx3-ubyte{suffix}"
        labels_path = Path(directory) / f"labels-idx1-ubyte{suffix}"
        for path, array in ((images_path, images), (labels_path, labels)):
            payload = idx_bytes(array)
            path.write_bytes(gzip.compress(payload) if compress else payload)
        valid = n_images == n_labels and (n_labels == 0 or labels.max() <= 9)
        try:
            split = load_idx_split(images_path, labels_path)
        except IdxFormatError as error:
            assert not valid
            assert str(error).startswith(f"{images_path} + {labels_path}: ")
        else:
            assert valid
            assert split.x.shape == (n_images, 28, 28) and split.x.dtype == np.float32
            np.testing.assert_array_equal(split.y, labels)
            assert np.all(split.x == np.float32(7 / 255))
