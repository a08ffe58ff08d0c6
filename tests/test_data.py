import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from fmnist_pipeline.data import (
    TRAIN_IMAGES,
    Split,
    check_split,
    decompressed_sha256,
    fetch,
    load_split,
    parse_idx,
    preprocess,
    read_idx,
    save_split,
)
from fmnist_pipeline.errors import FetchError, IdxFormatError, PipelineError
from tests.conftest import idx_bytes, synthetic_split, write_synthetic_mirror

# IDX parsing -------------------------------------------------------------------


def test_parse_idx_round_trips_images_and_labels():
    images, labels = synthetic_split(12, seed=0)
    assert np.array_equal(parse_idx(idx_bytes(images)), images)
    assert np.array_equal(parse_idx(idx_bytes(labels)), labels)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x00", "bad magic number"),
        (b"\x00\x00\x0d\x01" + b"\x00\x00\x00\x00", "not unsigned byte"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05" + b"\x01\x02", "need 13 bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01" + b"\x01\x02", "need 9 bytes"),
    ],
)
def test_parse_idx_rejects_malformed_payloads(payload, message):
    with pytest.raises(IdxFormatError, match=message):
        parse_idx(payload, "sample.idx")


def test_read_idx_names_the_file_when_gzip_is_truncated(tmp_path):
    images, _ = synthetic_split(20, seed=0)
    path = tmp_path / TRAIN_IMAGES
    path.write_bytes(gzip.compress(idx_bytes(images))[:-40])
    with pytest.raises(IdxFormatError, match=TRAIN_IMAGES):
        read_idx(path)


def test_check_split_rejects_mismatched_counts_shapes_and_labels():
    images, labels = synthetic_split(10, seed=0)
    with pytest.raises(IdxFormatError, match="10 images but 9 labels"):
        check_split(images, labels[:9], "s")
    with pytest.raises(IdxFormatError, match=r"expected \(n, 28, 28\)"):
        check_split(images[:, :27], labels, "s")
    with pytest.raises(IdxFormatError, match="label 10 outside 0..9"):
        check_split(images, np.where(labels == 0, 10, labels).astype(np.uint8), "s")


def test_preprocess_writes_scaled_float32_arrays(tmp_path):
    write_synthetic_mirror(tmp_path / "raw", n_train=30, n_test=20)
    sizes = preprocess(tmp_path / "raw", tmp_path / "prepared")
    assert sizes == {"train": 30, "test": 20}
    train = load_split(tmp_path / "prepared" / "train.npz")
    assert train.x.dtype == np.float32 and train.x.shape == (30, 28, 28)
    assert train.x.min() >= 0.0 and train.x.max() <= 1.0
    assert train.y.dtype == np.uint8 and set(train.y) <= set(range(10))


# Checksums ---------------------------------------------------------------------


def test_checksum_covers_decompressed_bytes_not_the_gzip_container(tmp_path):
    payload = idx_bytes(synthetic_split(5, seed=0)[0])
    fast, best = tmp_path / "fast.gz", tmp_path / "best.gz"
    fast.write_bytes(gzip.compress(payload, compresslevel=1))
    best.write_bytes(gzip.compress(payload, compresslevel=9, mtime=123))
    assert fast.read_bytes() != best.read_bytes()
    expected = hashlib.sha256(payload).hexdigest()
    assert decompressed_sha256(fast) == decompressed_sha256(best) == expected


# Fetching from mirror directories ----------------------------------------------


def test_fetch_copies_verified_files_from_a_mirror(synthetic_mirror, tmp_path):
    mirror, checksums = synthetic_mirror
    provenance = fetch(
        checksums, [str(tmp_path / "absent"), str(mirror)], tmp_path / "raw"
    )
    assert provenance == dict.fromkeys(checksums, str(mirror))
    for name, digest in checksums.items():
        assert decompressed_sha256(tmp_path / "raw" / name) == digest
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(checksums)


def test_fetch_skips_a_corrupt_mirror_and_uses_the_next(synthetic_mirror, tmp_path):
    mirror, checksums = synthetic_mirror
    corrupt = tmp_path / "corrupt"
    write_synthetic_mirror(corrupt, n_train=301)
    provenance = fetch(checksums, [str(corrupt), str(mirror)], tmp_path / "raw")
    assert provenance[TRAIN_IMAGES] == str(mirror)


def test_fetch_failure_lists_every_source_and_writes_nothing(
    synthetic_mirror, tmp_path
):
    mirror, checksums = synthetic_mirror
    (mirror / TRAIN_IMAGES).write_bytes(b"not gzip at all")
    out = tmp_path / "raw"
    with pytest.raises(FetchError) as caught:
        fetch(
            {TRAIN_IMAGES: checksums[TRAIN_IMAGES]},
            [str(tmp_path / "nope"), str(mirror)],
            out,
        )
    message = str(caught.value)
    assert f"{tmp_path / 'nope'}/{TRAIN_IMAGES}: " in message
    assert f"{mirror}/{TRAIN_IMAGES}: not a complete gzip file" in message
    assert list(out.iterdir()) == []


# Fetching over HTTP from a real server on 127.0.0.1 --------------------------------


@pytest.fixture
def http_mirror(synthetic_mirror):
    """Serve the synthetic mirror on 127.0.0.1, with misbehaving prefixes.

    ``/broken/`` serves each file with one flipped byte, ``/truncated/`` announces
    the full length but sends half and hangs up, and ``/stalled/`` never answers
    until the test ends.
    """
    mirror, checksums = synthetic_mirror
    broken = mirror / "broken"
    broken.mkdir()
    for name in checksums:
        data = bytearray((mirror / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (broken / name).write_bytes(bytes(data))
    release = threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(mirror), **kwargs)

        def do_GET(self):
            if self.path.startswith("/stalled/"):
                release.wait()
                return
            if self.path.startswith("/truncated/"):
                body = (mirror / Path(self.path).name).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", checksums
    release.set()
    server.shutdown()
    server.server_close()


def test_fetch_downloads_and_verifies_over_http(http_mirror, tmp_path):
    base, checksums = http_mirror
    provenance = fetch(checksums, [base], tmp_path / "raw", timeout=10)
    assert set(provenance.values()) == {base}
    for name, digest in checksums.items():
        assert decompressed_sha256(tmp_path / "raw" / name) == digest


def test_fetch_falls_through_404_and_flipped_byte(http_mirror, tmp_path):
    base, checksums = http_mirror
    sources = [f"{base}/missing", f"{base}/broken", base]
    provenance = fetch(checksums, sources, tmp_path / "raw", timeout=10)
    assert set(provenance.values()) == {base}

    out = tmp_path / "raw2"
    with pytest.raises(FetchError) as caught:
        fetch(checksums, sources[:2], out, timeout=10)
    message = str(caught.value)
    assert "HTTP 404" in message
    assert ("checksum mismatch" in message) or ("not a complete gzip" in message)
    assert not any(Path(out).iterdir())
    assert list(tmp_path.glob(".*.part")) == []


def test_fetch_falls_through_a_timeout_and_a_truncated_body(http_mirror, tmp_path):
    base, checksums = http_mirror
    name = TRAIN_IMAGES
    sources = [f"{base}/stalled", f"{base}/truncated", base]
    # The stalled source never answers, so the timeout can leave a loaded machine
    # ample time for the good source.
    provenance = fetch({name: checksums[name]}, sources, tmp_path / "raw", timeout=2)
    assert provenance == {name: base}

    out = tmp_path / "raw2"
    with pytest.raises(FetchError) as caught:
        fetch({name: checksums[name]}, sources[:2], out, timeout=2)
    stalled, truncated = str(caught.value).split("; ")
    assert "stalled" in stalled and "timed out" in stalled
    assert "truncated download" in truncated
    assert not any(out.iterdir())
    assert list(tmp_path.glob(".*.part")) == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "is not a prepared split"),
        (b"garbage" * 100, "is not a prepared split"),
        ("truncated", "is not a prepared split"),
        ("wrong shape", "images have shape (3, 4), expected (n, 28, 28)"),
        ("label 12", "label 12 outside 0..9"),
    ],
)
def test_a_corrupt_prepared_split_is_a_one_line_error(tmp_path, content, reason):
    path = tmp_path / "train.npz"
    good = Split(np.zeros((3, 28, 28), np.float32), np.array([0, 1, 2], np.uint8))
    if content == "truncated":
        save_split(path, good)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "wrong shape":
        save_split(path, Split(np.zeros((3, 4), np.float32), good.y))
    elif content == "label 12":
        save_split(path, Split(good.x, np.array([0, 1, 12], np.uint8)))
    else:
        path.write_bytes(content)
    with pytest.raises(
        PipelineError, match="rerun `dvc repro -f preprocess`$"
    ) as caught:
        load_split(path)
    assert reason in str(caught.value) and "\n" not in str(caught.value)
