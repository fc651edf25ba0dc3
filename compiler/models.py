"""Small float models to quantize and compile: an MLP trained on scikit-learn's digits
(the CNN is in :mod:`lowbit.compiler.cnn`).

The digits data set (1797 images of 8x8 pixels, 10 classes) ships with scikit-learn, so
nothing is downloaded. Training is deterministic for a given ``seed``.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from .quantize import FloatLayer, FloatMLP

__all__ = ["DigitsMLP", "digits_split", "train_digits_mlp"]


class DigitsMLP(NamedTuple):
    """A trained model, its fixed train/test split and its float test accuracy.

    Inputs are pixel intensities scaled to ``[0, 1]`` (shape ``(n, 64)``); labels are
    ``0..9``. The model's outputs are the 10 class logits.
    """

    model: FloatMLP
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    accuracy: float


def digits_split(seed: int = 0, test_size: float = 0.25):
    """``(x_train, x_test, y_train, y_test)`` of the digits: ``(n, 64)`` pixels in ``[0, 1]``,
    a stratified split with ``random_state=seed`` (the MLP and the CNN use the same one)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float64) / 16.0
    return train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)


def train_digits_mlp(hidden: tuple[int, ...] = (64, 32), seed: int = 0, *,
                     test_size: float = 0.25, max_iter: int = 300) -> DigitsMLP:
    """Train a ReLU MLP on ``sklearn.datasets.load_digits`` with Adam (MLPClassifier).

    The split is stratified with ``random_state=seed``; the network is trained with
    ``random_state=seed`` too, so the result is the same on every run.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    hidden = tuple(int(h) for h in hidden)
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden layer sizes must be positive, not {hidden}")
    x_train, x_test, y_train, y_test = digits_split(seed, test_size)
    clf = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", solver="adam",
                        alpha=1e-4, learning_rate_init=1e-3, max_iter=max_iter,
                        random_state=seed, tol=1e-6, n_iter_no_change=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    layers = []
    n = len(clf.coefs_)
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=True)):
        layers.append(FloatLayer(weight=np.array(w), bias=np.array(b), relu=i < n - 1))
    model = FloatMLP(layers=tuple(layers))
    accuracy = float((model.forward(x_test).argmax(axis=1) == y_test).mean())
    return DigitsMLP(model, x_train, y_train, x_test, y_test, accuracy)
