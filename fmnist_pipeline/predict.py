"""Classifying new images with the trained model.

Fashion-MNIST images are 28x28 grayscale with a light item on a dark background,
stored as float32 in [0, 1]. :func:`load_image` turns a PNG or JPEG file into
exactly that, and :class:`FashionClassifier` runs the model on such arrays or on
image files and reports the most probable classes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fmnist_pipeline import CLASS_NAMES
from fmnist_pipeline.data import IMAGE_SHAPE
from fmnist_pipeline.errors import PipelineError
from fmnist_pipeline.model import load_model

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PATH = Path("models/model.keras")
IMAGE_FORMATS = ("PNG", "JPEG")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
INVERT_CHOICES = ("auto", "always", "never")
Invert = Literal["auto", "always", "never"]

# Grey level above which the border of a picture counts as a light background.
_LIGHT_BACKGROUND = 127.5
# Grey-level distance from the background beyond which a pixel belongs to the item.
_ITEM_CONTRAST = 32.0
_MAX_16_BIT = 65535


class ModelFileError(PipelineError):
    """The trained model file is missing or cannot be loaded."""


class ImageFileError(PipelineError):
    """A file is missing or is not a readable PNG or JPEG image.

    Attributes
    ----------
    path : Path
        The file.
    reason : str
        What is wrong with it, without the path.
    """

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class ClassScore(NamedTuple):
    """One class of a prediction and the model's probability for it."""

    class_name: str
    probability: float


@dataclass(frozen=True)
class FileResult:
    """What became of one image file: its top classes, or why it failed.

    Attributes
    ----------
    path : Path
        The file (or a directory without images) as given or found.
    predictions : tuple of ClassScore
        The most probable classes, most probable first; empty on error.
    error : str or None
        Why the file could not be classified; ``None`` on success.
    """

    path: Path
    predictions: tuple[ClassScore, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# Images ------------------------------------------------------------------------


def load_image(path: str | Path, invert: Invert = "auto") -> np.ndarray:
    """Read a PNG or JPEG file as a Fashion-MNIST image.

    The picture is converted to grayscale (transparent areas count as white, like
    the white studio background of the catalogue photos Fashion-MNIST was made
    from), cropped to the item (pictures larger than 28x28 only), resized to fit
    within 28x28 keeping its aspect ratio, padded to 28x28
    with the background's grey level, and inverted when its background is light,
    so that the item ends up light on a dark background. Pixels are scaled by
    1/255, exactly like the training data.

    Parameters
    ----------
    path
        A PNG or JPEG file.
    invert
        ``"auto"`` inverts when the mean grey level of the picture's border
        pixels is light (above 127.5 of 255); ``"always"`` and ``"never"``
        override that guess.

    Returns
    -------
    ndarray of shape (28, 28), float32 in [0, 1]

    Raises
    ------
    ImageFileError
        When the file is missing or is not a readable PNG or JPEG image.
    ValueError
        When ``invert`` is not one of ``"auto"``, ``"always"`` or ``"never"``.

    Examples
    --------
    >>> image = load_image("shirt.jpg")  # doctest: +SKIP
    >>> image.shape, image.dtype  # doctest: +SKIP
    ((28, 28), dtype('float32'))
    """
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {INVERT_CHOICES}, got {invert!r}")
    path = Path(path)
    gray = _read_grayscale(path)

    # Decide the polarity from the border, where a product photo shows background.
    pixels = np.asarray(gray, dtype=np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = float(border.mean())
    if invert == "always" or (invert == "auto" and background > _LIGHT_BACKGROUND):
        gray = ImageOps.invert(gray)
        background = 255.0 - background

    # Fashion-MNIST's items fill the frame, so a larger picture is first cropped
    # to the item's bounding box; an image that is already 28x28 passes through
    # unchanged.
    height, width = IMAGE_SHAPE
    if gray.size != (width, height):
        gray = _crop_to_item(gray, background)
    fitted = ImageOps.pad(
        gray,
        (width, height),
        method=Image.Resampling.LANCZOS,
        color=round(background),
    )
    return np.asarray(fitted, dtype=np.uint8).astype(np.float32) / 255.0


def _crop_to_item(gray: Image.Image, background: float) -> Image.Image:
    """Crop to the pixels that differ clearly from the background grey level."""
    pixels = np.asarray(gray, dtype=np.float64)
    item = np.abs(pixels - background) > _ITEM_CONTRAST
    if not item.any():
        return gray
    rows, columns = np.flatnonzero(item.any(axis=1)), np.flatnonzero(item.any(axis=0))
    return gray.crop((columns[0], rows[0], columns[-1] + 1, rows[-1] + 1))


def _read_grayscale(path: Path) -> Image.Image:
    """Decode ``path`` into an 8-bit grayscale ("L") image."""
    if not path.exists():
        raise ImageFileError(path, "no such file")
    if path.is_dir():
        raise ImageFileError(path, "is a directory, not an image file")
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise ImageFileError(path, "not a PNG or JPEG image") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageFileError(path, f"cannot read image ({error})") from None
    if image.width == 0 or image.height == 0:
        raise ImageFileError(path, "image has no pixels")

    if image.has_transparency_data:
        white = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(white, image.convert("RGBA"))
    if image.mode.startswith("I"):
        # Pillow clips 16-bit grey levels to 255 when converting to "L"; rescale.
        levels = np.asarray(image, dtype=np.float64) * 255.0 / _MAX_16_BIT
        levels = np.clip(np.rint(levels), 0, 255).astype(np.uint8)
        return Image.fromarray(levels)
    return image.convert("L")


def find_images(directory: str | Path) -> list[Path]:
    """The PNG and JPEG files directly inside ``directory``, sorted by name."""
    return sorted(
        entry
        for entry in Path(directory).iterdir()
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES
    )


def as_model_input(images: np.ndarray) -> np.ndarray:
    """Check a batch of images and scale it like the training data.

    Parameters
    ----------
    images
        Shape (n, 28, 28) or a single (28, 28) image; uint8 grey levels 0..255
        (scaled by 1/255) or floats already in [0, 1].

    Returns
    -------
    ndarray of shape (n, 28, 28), float32 in [0, 1]

    Raises
    ------
    ValueError
        When the shape, the dtype or the value range is wrong.
    """
    images = np.asarray(images)
    if images.shape == IMAGE_SHAPE:
        images = images[np.newaxis]
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"images must have shape (n, 28, 28) or (28, 28), got {images.shape}"
        )
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"images must be uint8 (0..255) or float in [0, 1], got {images.dtype}"
        )
    if images.size and not (
        np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0
    ):
        raise ValueError(
            "float images must lie in [0, 1] (scale uint8 pixels by 1/255); got "
            f"values from {np.nanmin(images)} to {np.nanmax(images)}"
        )
    return images.astype(np.float32)


# Classifier ----------------------------------------------------------------------


class FashionClassifier:
    """The trained model, ready to classify arrays and image files.

    Parameters
    ----------
    model_path
        The ``.keras`` file written by the train stage. It is loaded in Keras'
        safe mode, which refuses embedded Python code.
    batch_size
        Images per forward pass.

    Attributes
    ----------
    model : keras.Model
        The loaded network.

    Raises
    ------
    ModelFileError
        When the model file is missing or cannot be loaded.

    Examples
    --------
    >>> classifier = FashionClassifier("models/model.keras")  # doctest: +SKIP
    >>> classifier.classify_files(["shirt.jpg"])[0].predictions[0]  # doctest: +SKIP
    ClassScore(class_name='Shirt', probability=0.91)
    """

    def __init__(
        self, model_path: str | Path = DEFAULT_MODEL_PATH, batch_size: int = 256
    ):
        self.model_path = Path(model_path)
        self.batch_size = batch_size
        try:
            self.model = load_model(self.model_path)
        except PipelineError as error:
            # Missing, unreadable or not a Fashion-MNIST classifier: load_model's
            # message names the file and how to get it back.
            raise ModelFileError(str(error)) from None
        logger.info("loaded model %s", self.model_path)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, 10), columns in ``CLASS_NAMES`` order.

        Parameters
        ----------
        images
            Shape (n, 28, 28) or (28, 28); uint8 or float32 in [0, 1].
        """
        batch = as_model_input(images)
        if len(batch) == 0:
            return np.empty((0, len(CLASS_NAMES)), dtype=np.float32)
        return self.model.predict(batch, batch_size=self.batch_size, verbose=0)

    def predict(self, images: np.ndarray, top_k: int = 3) -> list[list[ClassScore]]:
        """The ``top_k`` most probable classes of each image, most probable first.

        Parameters
        ----------
        images
            Shape (n, 28, 28) or (28, 28); uint8 or float32 in [0, 1].
        top_k
            How many classes to report per image, 1 to 10.
        """
        _check_top_k(top_k)
        return [_top_classes(row, top_k) for row in self.predict_proba(images)]

    def classify_files(
        self,
        paths: Iterable[str | Path],
        invert: Invert = "auto",
        top_k: int = 3,
    ) -> list[FileResult]:
        """Classify image files and the images directly inside directories.

        A directory stands for its PNG and JPEG files, sorted by name. A file that
        cannot be read (or a directory without images) becomes a result with an
        error; the other files are still classified.

        Parameters
        ----------
        paths
            Image files and directories.
        invert
            Polarity handling of :func:`load_image`.
        top_k
            How many classes to report per image, 1 to 10.

        Returns
        -------
        list of FileResult
            One per file, in the order given (directories expanded in place).
        """
        _check_top_k(top_k)
        results: list[FileResult | None] = []
        images, slots = [], []
        for path in _expand(paths):
            if isinstance(path, FileResult):
                results.append(path)
                continue
            try:
                images.append(load_image(path, invert=invert))
            except ImageFileError as error:
                logger.info("skipping %s", error)
                results.append(FileResult(path=path, error=error.reason))
                continue
            slots.append((len(results), path))
            results.append(None)

        if images:
            ranked = self.predict(np.stack(images), top_k=top_k)
            for (slot, path), predictions in zip(slots, ranked, strict=True):
                results[slot] = FileResult(path=path, predictions=tuple(predictions))
        logger.info("classified %d of %d files", len(images), len(results))
        return [result for result in results if result is not None]


def _expand(paths: Iterable[str | Path]) -> list[Path | FileResult]:
    """Replace each directory by its image files, or by an error when it has none."""
    expanded: list[Path | FileResult] = []
    for path in map(Path, paths):
        if not path.is_dir():
            expanded.append(path)
            continue
        try:
            found = find_images(path)
        except OSError as error:
            reason = f"cannot list directory ({error.strerror or error})"
            expanded.append(FileResult(path=path, error=reason))
            continue
        if not found:
            reason = "no PNG or JPEG files (.png, .jpg, .jpeg) in this directory"
            expanded.append(FileResult(path=path, error=reason))
        expanded.extend(found)
    return expanded


def _check_top_k(top_k: int) -> None:
    if not 1 <= top_k <= len(CLASS_NAMES):
        raise ValueError(f"top_k must be between 1 and {len(CLASS_NAMES)}, got {top_k}")


def _top_classes(probabilities: Sequence[float], top_k: int) -> list[ClassScore]:
    # A stable sort keeps ties in class order, so the ranking is reproducible.
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:top_k]
    return [ClassScore(CLASS_NAMES[i], float(probabilities[i])) for i in order]
