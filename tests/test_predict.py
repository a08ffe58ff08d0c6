"""Classifying image files with a trained model, through the API and `fmnist`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from fmnist_pipeline import CLASS_NAMES
from fmnist_pipeline.cli import main
from fmnist_pipeline.data import TEST_IMAGES, read_idx
from fmnist_pipeline.model import FashionMLPClassifier
from fmnist_pipeline.predict import (
    FashionClassifier,
    ImageFileError,
    ModelFileError,
    load_image,
)
from tests.conftest import REAL_DATA, synthetic_split

FMNIST = Path(sys.executable).parent / "fmnist"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on synthetic images, and its saved .keras file."""
    images, labels = synthetic_split(300, seed=1)
    estimator = FashionMLPClassifier(
        units_1=32, units_2=16, units_3=16, epochs=2, random_state=0
    )
    estimator.fit(images.astype(np.float32) / 255.0, labels)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    estimator.model_.save(path)
    return estimator.model_, path


@pytest.fixture(scope="module")
def classifier(trained):
    return FashionClassifier(trained[1])


@pytest.fixture(scope="module")
def samples():
    """Ten uint8 images, one per class, light bars on a dark noisy background."""
    images, _ = synthetic_split(10, seed=2)
    return images


def model_proba(model, images: np.ndarray) -> np.ndarray:
    """What the model itself says about uint8 images scaled like the training data."""
    return model.predict(images.astype(np.float32) / 255.0, verbose=0)


def write_pngs(directory: Path, images: np.ndarray, prefix: str = "item") -> list:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = directory / f"{prefix}_{index}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def full_proba(result) -> np.ndarray:
    """A file result with all ten classes, back to CLASS_NAMES order."""
    proba = np.zeros(len(CLASS_NAMES))
    for score in result.predictions:
        proba[CLASS_NAMES.index(score.class_name)] = score.probability
    return proba


def test_png_files_classify_exactly_like_the_arrays(
    trained, classifier, samples, tmp_path
):
    model, _ = trained
    paths = write_pngs(tmp_path, samples)

    results = classifier.classify_files(paths, top_k=len(CLASS_NAMES))

    assert [result.path for result in results] == paths
    assert all(result.ok for result in results)
    for path, image in zip(paths, samples, strict=True):
        np.testing.assert_array_equal(load_image(path), image / np.float32(255.0))
    expected = model_proba(model, samples)
    got = np.stack([full_proba(result) for result in results])
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        classifier.predict_proba(samples), expected, rtol=0, atol=1e-6
    )


def test_light_background_png_is_inverted_back_with_auto(
    trained, classifier, samples, tmp_path
):
    model, _ = trained
    light = write_pngs(tmp_path, 255 - samples, prefix="light")

    results = classifier.classify_files(light, invert="auto", top_k=len(CLASS_NAMES))

    for path, image in zip(light, samples, strict=True):
        np.testing.assert_array_equal(load_image(path), image / np.float32(255.0))
        np.testing.assert_array_equal(
            load_image(path, invert="never"), (255 - image) / np.float32(255.0)
        )
    got = np.stack([full_proba(result) for result in results])
    np.testing.assert_allclose(got, model_proba(model, samples), rtol=0, atol=1e-6)


def test_invert_always_and_never_override_the_guess(samples, tmp_path):
    (dark,) = write_pngs(tmp_path, samples[:1])

    np.testing.assert_array_equal(
        load_image(dark, invert="always"), (255 - samples[0]) / np.float32(255.0)
    )
    np.testing.assert_array_equal(
        load_image(dark, invert="never"), samples[0] / np.float32(255.0)
    )
    with pytest.raises(ValueError, match="invert"):
        load_image(dark, invert="sometimes")


def test_directory_argument_classifies_each_image_in_it(
    trained, samples, tmp_path, capsys
):
    model, model_path = trained
    folder = tmp_path / "photos"
    paths = write_pngs(folder, samples[:3])
    (folder / "notes.txt").write_text("not an image")
    write_pngs(folder / "nested", samples[3:4])
    expected = model_proba(model, samples[:3]).argmax(axis=1)

    status = main(["predict", "--model", str(model_path), "--top-k", "1", str(folder)])

    out, err = capsys.readouterr()
    assert status == 0, err
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 3
    for line, path, label in zip(lines, sorted(paths), expected, strict=True):
        assert line.startswith(f"{path}: {CLASS_NAMES[label]} ")
        assert line.endswith("%") and line.count("%") == 1


def test_bad_and_missing_files_fail_alone_in_the_fmnist_command(
    trained, samples, tmp_path
):
    model, model_path = trained
    assert FMNIST.exists(), "the fmnist console script is missing; pip install -e ."
    good = write_pngs(tmp_path, samples[:2])
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("plain text, not a PNG")
    missing = tmp_path / "missing.jpg"
    arguments = [good[0], not_an_image, missing, good[1]]

    result = subprocess.run(
        [str(FMNIST), "predict", "--model", str(model_path), *map(str, arguments)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == [
        f"error: {not_an_image}: not a PNG or JPEG image",
        f"error: {missing}: no such file",
    ]
    expected = model_proba(model, samples[:2]).argmax(axis=1)
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line, path, label in zip(lines, good, expected, strict=True):
        assert line.startswith(f"{path}: {CLASS_NAMES[label]} ")


def test_json_output_lists_top_k_sorted_probabilities_per_file(
    trained, samples, tmp_path, capsys
):
    model, model_path = trained
    paths = write_pngs(tmp_path, samples[:4])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")

    status = main(
        ["predict", "--json", "--top-k", "4", "--model", str(model_path)]
        + [str(path) for path in paths]
        + [str(broken)]
    )

    out, err = capsys.readouterr()
    assert status == 1
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {broken}: ")
    entries = json.loads(out)
    assert [entry["path"] for entry in entries] == [str(p) for p in paths + [broken]]
    assert set(entries[-1]) == {"path", "error"}
    expected = model_proba(model, samples[:4])
    for entry, proba in zip(entries[:-1], expected, strict=True):
        assert set(entry) == {"path", "predictions"}
        predictions = entry["predictions"]
        assert len(predictions) == 4
        probabilities = [item["probability"] for item in predictions]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) <= 1 + 1e-6
        assert predictions[0]["class"] == CLASS_NAMES[proba.argmax()]
        assert probabilities[0] == pytest.approx(proba.max(), abs=1e-6)
        assert len({item["class"] for item in predictions}) == 4


def test_jpeg_files_are_read_and_classified(trained, classifier, samples, tmp_path):
    model, _ = trained
    paths = []
    for index, image in enumerate(samples):
        path = tmp_path / f"item_{index}.jpg"
        Image.fromarray(image).convert("RGB").save(path, quality=95)
        paths.append(path)

    results = classifier.classify_files(paths, top_k=len(CLASS_NAMES))

    assert all(result.ok for result in results)
    decoded = np.stack([load_image(path) for path in paths])
    assert np.abs(decoded - samples / 255.0).mean() < 0.02
    got = np.stack([full_proba(result) for result in results])
    np.testing.assert_allclose(
        got, model.predict(decoded, verbose=0), rtol=0, atol=1e-6
    )
    agree = got.argmax(axis=1) == model_proba(model, samples).argmax(axis=1)
    assert agree.mean() >= 0.8


def test_wide_photo_is_cropped_to_the_item_fitted_and_padded(tmp_path):
    # A dark 40x160 item with wide margins on a light grey 100x200 background.
    photo = np.full((100, 200), 230, dtype=np.uint8)
    photo[30:70, 20:180] = 30
    path = tmp_path / "wide.png"
    Image.fromarray(photo).save(path)

    image = load_image(path)

    assert image.shape == (28, 28) and image.dtype == np.float32
    background = np.float32(255 - 230) / np.float32(255.0)
    # The margins are cropped away; 40x160 becomes 7x28, padded above and below.
    np.testing.assert_array_equal(image[:10], background)
    np.testing.assert_array_equal(image[-10:], background)
    assert image[14, :].min() > 0.85


def test_transparent_and_16_bit_pngs(samples, tmp_path):
    # Transparent areas count as white, so a dark item on them comes out light.
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[10:30, 5:35] = (20, 20, 20, 255)
    transparent = tmp_path / "transparent.png"
    Image.fromarray(rgba).save(transparent)
    image = load_image(transparent)
    assert image[0, 0] == 0.0 and image[14, 14] > 0.9

    # 16-bit grey levels are scaled to 8 bits, not clipped.
    deep = tmp_path / "deep.png"
    Image.fromarray(samples[0].astype(np.uint16) * 257).save(deep)
    np.testing.assert_array_equal(load_image(deep), samples[0] / np.float32(255.0))


def test_missing_model_says_to_run_dvc_repro(tmp_path, capsys):
    missing = tmp_path / "models" / "model.keras"
    with pytest.raises(ModelFileError, match="dvc repro"):
        FashionClassifier(missing)

    status = main(["predict", "--model", str(missing), str(tmp_path)])

    _, err = capsys.readouterr()
    assert status == 1
    assert err.count("\n") == 1
    assert str(missing) in err and "dvc repro" in err and "dvc pull" in err


def test_arrays_are_checked_and_uint8_is_scaled(classifier, samples, tmp_path):
    scaled = samples.astype(np.float32) / 255.0
    np.testing.assert_array_equal(
        classifier.predict_proba(samples), classifier.predict_proba(scaled)
    )
    single = classifier.predict(samples[0], top_k=2)
    assert len(single) == 1 and len(single[0]) == 2
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        classifier.predict_proba(samples.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        classifier.predict_proba(np.zeros((2, 28, 27), dtype=np.float32))
    with pytest.raises(ValueError, match="top_k"):
        classifier.predict(samples, top_k=11)
    with pytest.raises(ImageFileError, match="no such file"):
        load_image(tmp_path / "nothing.png")


def test_damaged_or_foreign_model_files_are_refused(tmp_path):
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(b"not a zip archive")
    with pytest.raises(ModelFileError, match="not a .keras \\(zip\\) archive"):
        FashionClassifier(damaged)

    foreign = keras.Sequential(
        [keras.Input(shape=(28, 28)), keras.layers.Flatten(), keras.layers.Dense(5)]
    )
    foreign_path = tmp_path / "foreign.keras"
    foreign.save(foreign_path)
    with pytest.raises(ModelFileError, match="not 28x28 images to 10 classes"):
        FashionClassifier(foreign_path)


@pytest.mark.skipif(
    not REAL_DATA.is_dir() and not os.environ.get("CI"),
    reason="needs the Debian package dataset-fashion-mnist",
)
def test_test_set_images_written_as_pngs_classify_like_the_arrays(
    trained, classifier, tmp_path
):
    model, _ = trained
    images = read_idx(REAL_DATA / TEST_IMAGES)[:200]
    paths = write_pngs(tmp_path, images, prefix="t10k")

    results = classifier.classify_files(paths, top_k=len(CLASS_NAMES))

    got = np.stack([full_proba(result) for result in results])
    expected = model_proba(model, images)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
