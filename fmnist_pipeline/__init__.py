"""Tune, train and evaluate a Keras MLP on Fashion-MNIST, driven by DVC stages."""

import os

# TensorFlow's C++ start-up chatter hides the pipeline's own progress lines; set
# TF_CPP_MIN_LOG_LEVEL=0 to bring it back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

__version__ = "0.1.0"
