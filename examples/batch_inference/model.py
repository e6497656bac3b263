"""The model: a scikit-learn classifier trained on transactions this example makes up."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

N_FEATURES = 12


def make_data(n: int, seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``n`` labelled transactions; the same ``seed`` gives the same rows."""
    x, y = make_classification(n_samples=n, n_features=N_FEATURES, n_informative=6,
                               weights=[0.9], flip_y=0.01, random_state=seed)
    return x, y


@functools.cache
def model() -> Any:
    """The fitted model (trained once per process, deterministically)."""
    x, y = make_data(5000, seed=0)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
