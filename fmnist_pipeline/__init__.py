"""Tune, train and evaluate a Keras MLP on Fashion-MNIST, driven by DVC stages."""

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
