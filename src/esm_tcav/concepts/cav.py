"""Concept activation vectors: a linear classifier in one layer's activation space.

The extension point is `ConceptClassifier` (scikit-learn style `fit` / `decision_function`):
anything linear that can report its weights in the raw activation space plugs in. Whatever the
classifier does inside (standardize, PCA, logistic regression), the fitted `CAV` is one unit
direction in raw space plus a bias, so per-residue detection is a single matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from esm_tcav.errors import ArtifactError, ConfigError
from esm_tcav.io.files import load_tensors, save_tensors


@runtime_checkable
class ConceptClassifier(Protocol):
    """What a CAV classifier must offer. `raw_linear()` gives (w, b) with score = x @ w + b."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> ConceptClassifier: ...

    def decision_function(self, X: np.ndarray) -> np.ndarray: ...

    def raw_linear(self) -> tuple[np.ndarray, float]: ...


class LogisticCAVClassifier:
    """Standardize → optional PCA → L2 logistic regression, folded back into raw space."""

    def __init__(self, pca_components: int | None = 128, C: float = 1.0, seed: int = 0):
        self.pca_components = pca_components
        self.C = C
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogisticCAVClassifier:
        scaler, pca, Z = self.fit_preprocess(X)
        return self.fit_head(Z, y, (scaler, pca))

    def fit_preprocess(self, X: np.ndarray) -> tuple[StandardScaler, PCA | None, np.ndarray]:
        """Fit standardization and PCA alone and return them with the transformed data.

        They do not depend on the labels, so random CAVs trained on the same examples (shuffled
        labels) reuse one fit per layer through `fit_head` instead of refitting each time.
        """
        X = np.asarray(X, dtype=np.float32)
        scaler = StandardScaler().fit(X)
        Z = scaler.transform(X)
        n_comp = self.pca_components
        pca = None
        if n_comp is not None and n_comp < min(Z.shape):
            pca = PCA(n_components=n_comp, random_state=self.seed).fit(Z)
            Z = pca.transform(Z)
        return scaler, pca, Z

    def fit_head(
        self, Z: np.ndarray, y: np.ndarray, preprocess: tuple[StandardScaler, PCA | None]
    ) -> LogisticCAVClassifier:
        """Fit the logistic regression on data already transformed by `preprocess`.

        Newton-Cholesky when there are few features (after PCA: converges in ~10 steps where
        L-BFGS takes ~50, and to a tighter optimum); L-BFGS for wide data.
        """
        self.scaler_, self.pca_ = preprocess
        solver = "newton-cholesky" if Z.shape[1] <= 512 else "lbfgs"
        self.lr_ = LogisticRegression(
            C=self.C, max_iter=2000, class_weight="balanced", solver=solver, random_state=self.seed
        ).fit(Z, y)
        return self

    def raw_linear(self) -> tuple[np.ndarray, float]:
        w = self.lr_.coef_[0].astype(np.float64)
        b = float(self.lr_.intercept_[0])
        if self.pca_ is not None:
            b -= float(self.pca_.mean_ @ self.pca_.components_.T @ w)
            w = self.pca_.components_.T @ w
        scale = np.where(self.scaler_.scale_ == 0, 1.0, self.scaler_.scale_)
        w_raw = w / scale
        b_raw = b - float(self.scaler_.mean_ @ w_raw)
        return w_raw, b_raw

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        w, b = self.raw_linear()
        return np.asarray(X, dtype=np.float64) @ w + b


CLASSIFIERS = {"logistic": LogisticCAVClassifier}


def make_classifier(name: str, **params) -> ConceptClassifier:
    """Build a registered classifier by config name (`train.classifier`)."""
    try:
        cls = CLASSIFIERS[name]
    except KeyError:
        raise ConfigError(
            f"train.classifier {name!r} unknown; choose one of {sorted(CLASSIFIERS)}"
        ) from None
    return cls(**params)


@dataclass
class CAV:
    """A unit concept direction in raw activation space; score = states @ direction + bias.

    The score is the signed distance (in raw activation units) to the classifier's decision
    boundary, so thresholds from the registry are comparable across proteins.
    """

    concept: str
    layer: int
    direction: np.ndarray  # [H], unit norm
    bias: float
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"CAV({self.concept!r}, layer={self.layer}, hidden_size={self.hidden_size}, "
            f"bias={self.bias:.4g})"
        )

    @property
    def hidden_size(self) -> int:
        return int(self.direction.shape[0])

    @classmethod
    def from_classifier(
        cls, clf: ConceptClassifier, concept: str, layer: int, meta: dict | None = None
    ) -> CAV:
        w, b = clf.raw_linear()
        norm = float(np.linalg.norm(w))
        if norm == 0 or not np.isfinite(norm):
            raise ArtifactError(f"concept {concept!r} layer {layer}: classifier has no direction")
        return cls(concept, layer, (w / norm).astype(np.float32), b / norm, dict(meta or {}))

    def score_residues(self, states: np.ndarray) -> np.ndarray:
        states = np.asarray(states)
        if states.shape[-1] != self.hidden_size:
            raise ArtifactError(
                f"CAV {self.concept!r} (layer {self.layer}) has hidden size {self.hidden_size} "
                f"but the states have {states.shape[-1]}; it was trained on another model"
            )
        return (states.astype(np.float32) @ self.direction + np.float32(self.bias)).astype(
            np.float32
        )

    def save(self, path: Path) -> None:
        save_tensors(
            path,
            {
                "direction": self.direction.astype(np.float32),
                "bias": np.array([self.bias], dtype=np.float64),
            },
            {"concept": self.concept, "layer": str(self.layer)},
        )

    @classmethod
    def load(cls, path: Path, meta: dict | None = None) -> CAV:
        tensors, md = load_tensors(path)
        return cls(
            md.get("concept", "concept"),
            int(md.get("layer", -1)),
            tensors["direction"],
            float(tensors["bias"][0]),
            dict(meta or {}),
        )
