"""The `train` stage: one concept CAV and N random CAVs per tapped layer, with statistics.

Per layer: examples (whole proteins, spans or residues) → standardize → optional PCA → linear
classifier, with stratified k-fold cross-validation grouped by protein inside the training
part; then the final CAV on all training examples, N random CAVs, and one held-out evaluation
(test proteins, never seen in any fit) shared by all of them. Results go to versioned,
hash-checked artifacts (see `artifacts.py`).

Nothing is chosen on the test proteins: the best layer is the highest cross-validated AUROC
(`artifacts.select_layer`); thresholds, span decoding (`decoding.choose_decoding`) and the Platt
calibration are set on out-of-fold scores of the training proteins. The test proteins are
scored once, to report: held-out AUROC, the random-CAV statistics (`stats.layer_statistics`),
the sequence-only and position controls (`controls.py`) and the grade (`grade.py`).

Why the examples are planned once, before any layer is read: the same residues, spans and
windows are used at every layer, so layers are compared on identical data, and the plan's seed
fully determines it. Why random CAVs reuse the layer's scaler and PCA: both are fitted without
labels, so with shuffled labels refitting them would give the same numbers at N times the cost.
Why every layer is fitted (`fit_layer`) before any is evaluated (`evaluate_layer`): a store
that keeps only a training sample (`store.residue_states`) has no states for the other residues,
so they are scored from one forward pass that needs every layer's CAVs first.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from threadpoolctl import threadpool_limits

from esm_tcav._version import __version__
from esm_tcav.concepts import controls as ctl
from esm_tcav.concepts.artifacts import (
    SELECTION,
    ArtifactDir,
    concept_dir,
    finished_versions,
    load_summary,
    next_version,
    randoms_dir,
    save_randoms,
    select_layer,
    set_current,
    summary_path,
    verify_manifest,
)
from esm_tcav.concepts.cav import CAV, make_classifier
from esm_tcav.concepts.decoding import choose_decoding, fit_platt
from esm_tcav.concepts.grade import RULE as GRADE_RULE
from esm_tcav.concepts.grade import grade
from esm_tcav.concepts.stats import add_qvalues, layer_statistics, summary_fields
from esm_tcav.concepts.thresholds import build_thresholds, metrics_at
from esm_tcav.engine.context import StageContext
from esm_tcav.engine.projections import Groups, Projections
from esm_tcav.errors import ArtifactError, ConfigError
from esm_tcav.io.files import atomic_write_json, content_hash, save_tensors
from esm_tcav.io.proteins import Protein
from esm_tcav.ui import iter_progress

log = logging.getLogger("esm_tcav.concepts.train")

# tags that make each random stream of a run independent and reproducible from `seed`
_SUBSAMPLE, _WINDOWS, _CV, _RANDOM, _TEST_WINDOWS, _CONTROLS = 1, 2, 3, 4, 5, 6
OOF_SOURCE = "out-of-fold CV scores of the training proteins"
INSAMPLE_SOURCE = "training proteins, in-sample scores (too few proteins for cross-validation)"

# n * H * H below this: one BLAS thread (a 20000 x 320 layer is 2e9, a 20000 x 1280 one 3e10)
SMALL_BLAS_WORK = 1e10


# ---------------------------------------------------------------------- example plans


@dataclass
class Examples:
    """Which residues pool into each example: residues [start, end) of `proteins[prot]`.

    kind "residue": one residue per example (end = start + 1); "span": the mean over a span or
    window; "protein": the whole-protein mean (read from the store's pooled vectors).
    """

    kind: str
    proteins: list[Protein]
    prot: np.ndarray
    start: np.ndarray
    end: np.ndarray
    y: np.ndarray
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.size)

    @property
    def protein_is_pos(self) -> np.ndarray:
        """Per protein: does it contain a concept example (used to stratify the bootstrap)."""
        flag = np.zeros(len(self.proteins), dtype=bool)
        flag[self.prot[self.y == 1]] = True
        return flag

    def _by_protein(self):
        order = np.argsort(self.prot, kind="mergesort")
        bounds = np.r_[0, np.nonzero(np.diff(self.prot[order]))[0] + 1, order.size]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if a < b:
                rows = order[a:b]
                yield int(self.prot[rows[0]]), rows

    def _positions(self, rows: np.ndarray) -> np.ndarray:
        """Sorted 0-based residue positions the examples `rows` (of one protein) pool over."""
        if self.kind == "residue":
            return np.unique(self.start[rows])
        return np.unique(
            np.concatenate(
                [np.arange(s, e) for s, e in zip(self.start[rows], self.end[rows], strict=True)]
            )
        )

    def positions(self) -> dict[str, np.ndarray]:
        """Per sequence hash, the residue positions these examples read: what a store keeping
        a training sample keeps (`store.residue_states: sample`)."""
        if self.kind == "protein":
            return {}
        out: dict[str, np.ndarray] = {}
        for pi, rows in self._by_protein():
            h = self.proteins[pi].seq_hash
            pos = self._positions(rows)
            out[h] = np.union1d(out[h], pos) if h in out else pos
        return out

    def _pool(self, values: np.ndarray, at: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Per example of `rows`: its residue's row of `values` (rows at positions `at`), or
        the mean over its span's rows."""
        if self.kind == "residue":
            return values[np.searchsorted(at, self.start[rows])]
        lo = np.searchsorted(at, self.start[rows])
        hi = np.searchsorted(at, self.end[rows])
        return np.stack([values[a:b].mean(axis=0) for a, b in zip(lo, hi, strict=True)]).astype(
            np.float32
        )

    def _vectors(self, store, layer: int, protein: Protein, rows: np.ndarray) -> np.ndarray:
        if self.kind == "protein":
            vec = np.asarray(store.mean(protein.seq_hash, layer), dtype=np.float32)
            return np.repeat(vec[None], rows.size, axis=0)
        at = self._positions(rows)
        return self._pool(store.residue_rows(protein.seq_hash, layer, at), at, rows)

    def materialize(self, store, layer: int) -> np.ndarray:
        """Feature matrix [n, H] float32 of this layer."""
        X = None
        for pi, rows in self._by_protein():
            V = self._vectors(store, layer, self.proteins[pi], rows)
            if X is None:
                X = np.empty((len(self), V.shape[1]), dtype=np.float32)
            X[rows] = V
        return X if X is not None else np.zeros((0, 0), np.float32)

    def score(self, store, layer: int, directions: np.ndarray, biases: np.ndarray) -> np.ndarray:
        """Scores [n, K] of K CAVs (directions [K, H]) without holding all features at once.

        `store`: the embedding store, or `engine.projections.Projections` (a run whose store
        keeps a training sample), whose residue projections are pooled like states."""
        D = np.asarray(directions, dtype=np.float32).T
        b = np.asarray(biases, dtype=np.float32)
        out = np.empty((len(self), D.shape[1]), dtype=np.float32)
        projected = isinstance(store, Projections)
        for pi, rows in self._by_protein():
            prot = self.proteins[pi]
            if not projected or self.kind == "protein":
                out[rows] = self._vectors(store, layer, prot, rows) @ D + b
            else:
                values = store.project(prot.seq_hash, layer, D.T)
                out[rows] = self._pool(values, np.arange(values.shape[0]), rows) + b
        return out


def _make(kind, proteins, rows, notes=None) -> Examples:
    arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return Examples(
        kind,
        proteins,
        arr[:, 0],
        arr[:, 1],
        arr[:, 2],
        arr[:, 3].astype(np.int8),
        dict(notes or {}),
    )


def with_spans(positives: list[Protein]) -> list[Protein]:
    return [p for p in positives if p.spans]


def protein_examples(pos: list[Protein], neg: list[Protein]) -> Examples:
    proteins = pos + neg
    rows = [(i, 0, p.length, int(i < len(pos))) for i, p in enumerate(proteins)]
    return _make("protein", proteins, rows)


def all_residue_examples(pos: list[Protein], neg: list[Protein]) -> Examples:
    """Every residue of the given proteins; label = inside a concept span (negatives: 0)."""
    pos = with_spans(pos)
    proteins = pos + neg
    prot, start, y = [], [], []
    for i, p in enumerate(proteins):
        prot.append(np.full(p.length, i))
        start.append(np.arange(p.length))
        y.append(p.residue_mask() if i < len(pos) else np.zeros(p.length, bool))
    prot_a, start_a = np.concatenate(prot), np.concatenate(start)
    return Examples(
        "residue", proteins, prot_a, start_a, start_a + 1, np.concatenate(y).astype(np.int8)
    )


def residue_examples(
    pos: list[Protein], neg: list[Protein], cap: int, rng: np.random.Generator
) -> Examples:
    """Class-balanced subsample: residues in spans vs residues outside spans and in negatives."""
    full = all_residue_examples(pos, neg)
    pos_rows = np.nonzero(full.y == 1)[0]
    neg_rows = np.nonzero(full.y == 0)[0]
    n_each = min(cap // 2, pos_rows.size, neg_rows.size)
    keep = np.sort(
        np.r_[
            rng.choice(pos_rows, n_each, replace=False), rng.choice(neg_rows, n_each, replace=False)
        ]
    )
    notes = {
        "pool_positive": int(pos_rows.size),
        "pool_negative": int(neg_rows.size),
        "per_class": int(n_each),
        "cap": cap,
    }
    return Examples(
        "residue",
        full.proteins,
        full.prot[keep],
        full.start[keep],
        full.end[keep],
        full.y[keep],
        notes,
    )


def span_examples(pos: list[Protein], neg: list[Protein], rng: np.random.Generator) -> Examples:
    """Concept spans vs length-matched windows: one from a negative protein and one from
    outside the spans of a positive protein per concept span (when such a window exists)."""
    pos = with_spans(pos)
    proteins = pos + neg
    rows = [(i, s.start - 1, s.end, 1) for i, p in enumerate(pos) for s in p.spans]
    masks = [np.r_[0, np.cumsum(p.residue_mask())] for p in pos]
    skipped = 0
    for _, start, end, _ in list(rows):
        length = end - start
        fits = [j for j, p in enumerate(neg) if p.length >= length]
        if fits:
            j = int(rng.choice(fits))
            s = int(rng.integers(0, neg[j].length - length + 1))
            rows.append((len(pos) + j, s, s + length, 0))
        for i in rng.permutation(len(pos))[:10]:  # a few tries to find room outside the spans
            c = masks[i]
            ok = np.nonzero(c[length:] - c[:-length] == 0)[0] if pos[i].length >= length else []
            if len(ok):
                s = int(rng.choice(ok))
                rows.append((int(i), s, s + length, 0))
                break
        else:
            skipped += 1
    return _make("span", proteins, rows, {"spans_without_outside_window": skipped})


def plan_examples(
    granularity: str,
    pos: list[Protein],
    neg: list[Protein],
    cap: int,
    seed: int,
    test: bool = False,
) -> Examples:
    if granularity == "protein":
        return protein_examples(pos, neg)
    if not with_spans(pos):
        raise ConfigError(
            f"train.granularity {granularity!r} needs concept spans on the "
            "positives, and none has any; give spans or use granularity: protein"
        )
    if granularity == "span":
        tag = _TEST_WINDOWS if test else _WINDOWS
        return span_examples(pos, neg, np.random.default_rng([seed, tag]))
    if test:
        return all_residue_examples(pos, neg)
    return residue_examples(pos, neg, cap, np.random.default_rng([seed, _SUBSAMPLE]))


def resolve_granularity(setting: str, has_spans: bool) -> str:
    """`auto`: residues when the positives carry spans (best localization), else proteins."""
    if setting != "auto":
        return setting
    return "residue" if has_spans else "protein"


# ---------------------------------------------------------------------- fitting


def _auc(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    if y.min() == y.max():
        return float("nan"), float("nan")
    return float(roc_auc_score(y, s)), float(average_precision_score(y, s))


def cross_validate(fit, decide, y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> dict:
    """Stratified k-fold grouped by protein (a protein's examples stay in one fold).

    `fit(rows, labels)` returns a fitted classifier, `decide(clf, rows)` its scores.
    """
    pos_groups = np.unique(groups[y == 1]).size
    neg_groups = np.unique(groups[y == 0]).size
    k = min(folds, pos_groups, neg_groups)
    if k < 2:
        return {
            "folds_requested": folds,
            "folds_used": 0,
            "fold_aurocs": [],
            "note": "too few proteins per class for cross-validation",
        }
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    aucs, fold_models = [], []
    for tr, va in cv.split(np.zeros(y.size), y, groups):
        if y[tr].min() == y[tr].max() or y[va].min() == y[va].max():
            continue
        clf = fit(tr, y[tr])
        aucs.append(float(roc_auc_score(y[va], decide(clf, va))))
        fold_models.append((np.unique(groups[va]), clf))
    return {
        "folds_requested": folds,
        "folds_used": k,
        "fold_aurocs": aucs,
        "grouped_by": "protein",
        "seed": seed,
        "_fold_models": fold_models,
    }


def out_of_fold_scores(
    fold_cavs: list[tuple[np.ndarray, CAV]], examples: Examples, store, layer: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Scores of examples from the CV fold model that did not see their protein.

    Thresholds are set on these (training proteins only), so detection metrics on the held-out
    proteins are not tuned on them. Proteins that no fold validated (none of their residues made
    the training subsample) are left out; returns (scores, rows) or None without CV.
    """
    if not fold_cavs:
        return None
    scores = np.full(len(examples), np.nan, dtype=np.float32)
    for val_proteins, cav in fold_cavs:
        rows = np.nonzero(np.isin(examples.prot, val_proteins))[0]
        if rows.size:
            part = Examples(
                examples.kind,
                examples.proteins,
                examples.prot[rows],
                examples.start[rows],
                examples.end[rows],
                examples.y[rows],
                {},
            )
            scores[rows] = part.score(store, layer, cav.direction[None], np.array([cav.bias]))[:, 0]
    covered = np.nonzero(~np.isnan(scores))[0]
    labels = examples.y[covered]
    if covered.size == 0 or labels.min() == labels.max():
        return None
    return scores[covered], covered


def random_labels(
    mode: str, y: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(example rows, labels) of one random CAV.

    label_shuffle: all examples, labels permuted. random_split: two disjoint random draws from
    the negative examples, one labelled 1 and one 0 (as the original TCAV's random concepts).
    """
    if mode == "label_shuffle":
        return np.arange(y.size), rng.permutation(y)
    negs = np.nonzero(y == 0)[0]
    m = min(int((y == 1).sum()), negs.size // 2)
    if m < 2:
        raise ConfigError("random_mode random_split needs at least 4 negative examples")
    draw = rng.permutation(negs)[: 2 * m]
    labels = np.r_[np.ones(m, np.int8), np.zeros(m, np.int8)]
    order = np.argsort(draw)
    return draw[order], labels[order]


@dataclass
class LayerResult:
    layer: int
    cav: CAV
    classifier: object
    randoms: list[CAV]
    random_info: list[dict]
    report: dict
    thresholds: dict
    stats: dict
    test_scores: np.ndarray | None = None


@dataclass
class FittedLayer:
    """One layer's CAVs, fitted on the training examples: the concept CAV, the random CAVs and
    the CV fold CAVs (each with the proteins it did not see)."""

    layer: int
    classifier: object
    cav: CAV
    randoms: list[CAV]
    random_info: list[dict]
    cv: dict
    fold_cavs: list[tuple[np.ndarray, CAV]]
    shared: bool
    train: dict
    seconds: float
    small: bool  # few enough examples x features for one BLAS thread (SMALL_BLAS_WORK)

    def training_directions(self) -> np.ndarray:
        """[K, H]: what training proteins' residues are scored on (the CV fold CAVs for
        out-of-fold scores; the concept CAV for in-sample ones when there is no CV)."""
        return np.stack([c.direction for c in [*(c for _, c in self.fold_cavs), self.cav]])

    def heldout_directions(self) -> np.ndarray:
        """[K, H]: what held-out proteins' residues are scored on (concept and random CAVs)."""
        return np.stack([c.direction for c in [self.cav, *self.randoms]])


def train_layer(
    store,
    layer: int,
    train_ex: Examples,
    test_ex: Examples,
    residue_test: Examples | None,
    cfg,
    concept: str,
    granularity: str,
    threshold_ex: Examples | None = None,
) -> LayerResult:
    """Fit, cross-validate, draw random CAVs and evaluate one layer on held-out proteins."""
    fitted = fit_layer(store, layer, train_ex, cfg, concept, granularity)
    return evaluate_layer(
        fitted, store, train_ex, test_ex, residue_test, cfg, concept, granularity, threshold_ex
    )


def fit_layer(
    store, layer: int, train_ex: Examples, cfg, concept: str, granularity: str
) -> FittedLayer:
    """The concept CAV, its CV fold CAVs and the random CAVs of one layer (training examples
    only: their states are all a store keeping a training sample holds)."""
    t0 = time.perf_counter()
    tc = cfg.train
    seed = cfg.seed

    def factory():
        return make_classifier(tc.classifier, pca_components=tc.pca_components, C=tc.C, seed=seed)

    X = train_ex.materialize(store, layer)
    y = train_ex.y.astype(np.int64)
    # Small problems run on one BLAS thread: threads do not pay at this size, and spinning BLAS
    # threads on a busy CPU cost 5-10x (measured on the demo). Large ones keep all threads.
    small = X.size * X.shape[1] < SMALL_BLAS_WORK
    with ExitStack() as stack:
        if small:
            stack.enter_context(threadpool_limits(1, user_api="blas"))
        clf = factory()
        # Standardization and PCA see no labels: fit them once on the training examples and
        # share them between CV folds, the concept CAV and every random CAV (held-out proteins
        # never enter any fit). A classifier without this split is refitted from raw features.
        shared = hasattr(clf, "fit_preprocess") and hasattr(clf, "fit_head")
        if shared:
            scaler, pca, Z = clf.fit_preprocess(X)

            def fit(rows, labels):
                with threadpool_limits(1, user_api="blas"):  # examples x components: small
                    return factory().fit_head(Z[rows], labels, (scaler, pca))
        else:

            def fit(rows, labels):
                return factory().fit(X[rows], labels)

        def decide(c, rows):
            return c.decision_function(X[rows])

        cv = cross_validate(fit, decide, y, train_ex.prot, tc.folds, seed + _CV)
        fold_cavs = [
            (val, CAV.from_classifier(c, concept, layer)) for val, c in cv.pop("_fold_models", [])
        ]
        clf = fit(np.arange(y.size), y)
        cav = CAV.from_classifier(clf, concept, layer, {"granularity": granularity})

        randoms, info = [], []
        for i in range(tc.n_random):
            rng = np.random.default_rng([seed, _RANDOM, layer, i])
            rows, labels = random_labels(tc.random_mode, y, rng)
            randoms.append(
                CAV.from_classifier(
                    fit(rows, labels),
                    f"{concept}:random",
                    layer,
                    {"index": i, "mode": tc.random_mode},
                )
            )
            info.append({"index": i, "seed": [seed, _RANDOM, layer, i], "mode": tc.random_mode})
        train = {
            "examples": len(train_ex),
            "positive": int((y == 1).sum()),
            "negative": int((y == 0).sum()),
            "proteins": int(np.unique(train_ex.prot).size),
            "auroc": _auc(y, np.asarray(clf.decision_function(X)))[0],
            **train_ex.notes,
        }
    return FittedLayer(
        layer,
        clf,
        cav,
        randoms,
        info,
        cv,
        fold_cavs,
        shared,
        train,
        time.perf_counter() - t0,
        small,
    )


def evaluate_layer(
    fitted: FittedLayer,
    source,
    train_ex: Examples,
    test_ex: Examples,
    residue_test: Examples | None,
    cfg,
    concept: str,
    granularity: str,
    threshold_ex: Examples | None = None,
) -> LayerResult:
    """Held-out AUROCs, thresholds, decoding and calibration of one fitted layer. `source`:
    the store, or the `Projections` of a run whose store keeps a training sample."""
    with ExitStack() as stack:
        if fitted.small:  # as its fit: one BLAS thread for a small problem
            stack.enter_context(threadpool_limits(1, user_api="blas"))
        return _evaluate_layer(
            fitted, source, train_ex, test_ex, residue_test, cfg, concept, granularity, threshold_ex
        )


def _evaluate_layer(
    fitted, source, train_ex, test_ex, residue_test, cfg, concept, granularity, threshold_ex
) -> LayerResult:
    t0 = time.perf_counter()
    tc, seed, layer = cfg.train, cfg.seed, fitted.layer
    clf, cav, randoms, info, cv = (
        fitted.classifier,
        fitted.cav,
        fitted.randoms,
        fitted.random_info,
        fitted.cv,
    )
    D = fitted.heldout_directions()
    b = np.array([c.bias for c in [cav, *randoms]])
    S = test_ex.score(source, layer, D, b)
    yt = test_ex.y.astype(np.int64)
    auroc, auprc = _auc(yt, S[:, 0])
    r_aucs = []
    for j, entry in enumerate(info, start=1):
        ra, rp = _auc(yt, S[:, j])
        entry.update(auroc=ra, auprc=rp)
        r_aucs.append(ra)

    residue_auroc = residue_scores = None
    if residue_test is not None:
        residue_scores = (
            S[:, 0]
            if residue_test is test_ex
            else residue_test.score(source, layer, D[:1], b[:1])[:, 0]
        )
        residue_auroc = _auc(residue_test.y.astype(np.int64), residue_scores)[0]
    # Thresholds, decoding and calibration: training proteins only. Out-of-fold scores (each
    # protein scored by the fold model that never saw it); without CV, in-sample scores of the
    # final CAV on the training examples. The test proteins never enter.
    thr_ex = threshold_ex
    if thr_ex is None:
        thr_ex = training_residues(train_ex) if residue_test is not None else train_ex
    oof = out_of_fold_scores(fitted.fold_cavs, thr_ex, source, layer)
    if oof is not None:
        thr_scores, rows = oof
        thresholds_from = OOF_SOURCE
    else:
        rows = np.arange(len(thr_ex))
        thr_scores = thr_ex.score(source, layer, D[:1], b[:1])[:, 0]
        thresholds_from = INSAMPLE_SOURCE
    thr_labels = thr_ex.y[rows]
    thc = cfg.thresholds
    thresholds = build_thresholds(
        layer,
        granularity,
        thr_scores,
        thr_labels,
        thc.precision_at_recall,
        thc.fpr,
        thc.method,
        thr_ex.kind,
        source=thresholds_from,
    )
    thresholds["calibrated_on"] = thresholds_from
    thresholds["calibration"] = fit_platt(thr_scores, thr_labels, seed=seed)
    thresholds["calibration"]["fitted_on"] = thresholds_from
    default_value = thresholds["methods"][thc.method]["value"]
    if thr_ex.kind == "residue":
        per_prot, truth = _per_protein(thr_ex, rows, thr_scores)
        thresholds["decoding"] = choose_decoding(per_prot, truth, default_value, seed=seed)
        thresholds["decoding"]["chosen_on"] = thresholds_from
    residue_f1 = None
    if residue_scores is not None:
        residue_f1 = metrics_at(residue_scores, residue_test.y, default_value)["f1"]

    st = layer_statistics(auroc, cv["fold_aurocs"], r_aucs)
    st["auroc"] = auroc
    pca_used = getattr(clf, "pca_", None)
    report = {
        "concept": concept,
        "layer": layer,
        "granularity": granularity,
        "classifier": {
            "name": tc.classifier,
            "C": tc.C,
            "pca_components_requested": tc.pca_components,
            "pca_components_used": int(pca_used.n_components_) if pca_used else None,
            "pca_explained_variance": float(pca_used.explained_variance_ratio_.sum())
            if pca_used
            else None,
        },
        "train": fitted.train,
        "cv": {
            **cv,
            "auroc_mean": float(np.mean(cv["fold_aurocs"])) if cv["fold_aurocs"] else None,
        },
        "heldout": {
            "unit": test_ex.kind,
            "examples": len(test_ex),
            "positive": int((yt == 1).sum()),
            "proteins": int(np.unique(test_ex.prot).size),
            "auroc": auroc,
            "auprc": auprc,
            "residue_auroc": residue_auroc,
            "residue_f1_at_threshold": residue_f1,
            "threshold_method": thc.method,
            "set": "held-out test proteins (reported only, never used to choose)",
        },
        "randoms": {
            "n": tc.n_random,
            "mode": tc.random_mode,
            "preprocessing": "shared: the layer's scaler and PCA (fit without labels)"
            if fitted.shared
            else "refit per random CAV",
            "aurocs": r_aucs,
            "mean": st["random_mean"],
            "sd": st["random_sd"],
        },
        "stats": st,
        "seconds": round(fitted.seconds + time.perf_counter() - t0, 3),
    }
    return LayerResult(layer, cav, clf, randoms, info, report, thresholds, st, S[:, 0])


def training_residues(train_ex: Examples) -> Examples:
    """Every residue of the training proteins (thresholds and decoding are set on these)."""
    idx = np.unique(train_ex.prot)
    pos_set = set(np.unique(train_ex.prot[train_ex.y == 1]).tolist())
    prots = train_ex.proteins
    return all_residue_examples(
        [prots[i] for i in idx if i in pos_set], [prots[i] for i in idx if i not in pos_set]
    )


def _per_protein(ex: Examples, rows: np.ndarray, scores: np.ndarray):
    """Per protein with covered residues: (its residue scores in order, its annotated spans)."""
    out_scores, truth = [], []
    prot = ex.prot[rows]
    order = np.lexsort((ex.start[rows], prot))
    prot, starts, sc = prot[order], ex.start[rows][order], np.asarray(scores)[order]
    labels = ex.y[rows][order]
    bounds = np.r_[0, np.nonzero(np.diff(prot))[0] + 1, prot.size]
    for a, z in zip(bounds[:-1], bounds[1:], strict=True):
        p = ex.proteins[int(prot[a])]
        if z - a != p.length or starts[a] != 0:
            continue  # only whole proteins (residue examples of every residue)
        out_scores.append(sc[a:z])
        truth.append([(s.start, s.end) for s in p.spans] if labels[a:z].any() else [])
    return out_scores, truth


# ---------------------------------------------------------------------- the `train` stage


def _controls(cfg, train_ex: Examples, test_ex: Examples, results: dict) -> dict[int, dict]:
    """Sequence-only baseline and position control vs every layer (see concepts/controls.py)."""
    tc = cfg.train
    if not tc.controls or len(train_ex) == 0 or test_ex.y.min() == test_ex.y.max():
        return {}
    t0 = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):
        scores = {
            name: ctl.control_scores(name, train_ex, test_ex, tc, cfg.seed, tc.control_window)
            for name in ctl.CONTROLS
        }
    rows = ctl.compare(
        test_ex,
        {layer: r.test_scores for layer, r in results.items()},
        scores,
        tc.control_bootstrap,
        cfg.evaluate.alpha,
        cfg.seed + _CONTROLS,
    )
    log.info("train: controls in %.1f s", time.perf_counter() - t0)
    return rows


def training_positions(cfg, ds) -> dict[str, np.ndarray]:
    """Per sequence hash, the residue positions `train` reads the states of (its sampled
    examples): all a store keeping a training sample keeps (`store.residue_states: sample`)."""
    granularity = resolve_granularity(cfg.train.granularity, ds.has_spans)
    pos, neg = ds.part("train")
    return plan_examples(granularity, pos, neg, cfg.train.residue_cap, cfg.seed).positions()


def needs_projections(ctx: StageContext, proteins: list[Protein]) -> bool:
    """Must every residue of `proteins` be scored from the forward pass? Yes when the store
    keeps only a training sample, unless it holds every state of them anyway (an earlier run
    that kept all)."""
    if not proteins or isinstance(ctx.residue_keep, bool):
        return False
    return bool(ctx.store.missing(proteins, ctx.layers, residues=True))


def project_residues(ctx: StageContext, groups: Groups) -> Projections:
    """Every residue of each group's proteins projected on that group's directions [K, H] per
    layer (for a run whose store keeps only a training sample): from one forward pass, or from
    the projections an earlier stage of the same process made (`train` projects the held-out
    proteins on every CAV that `evaluate` and `detect` score them with)."""
    from esm_tcav.engine.embed import make_engine
    from esm_tcav.ui import progress_bar

    groups = [(members, dirs) for members, dirs in groups if members]
    for known in ctx.projections:
        if all(known.covers(members, dirs) for members, dirs in groups):
            return known
    layers = sorted({n for _, dirs in groups for n in dirs})
    n = len({p.seq_hash for members, _ in groups for p in members})
    engine = make_engine(ctx.cfg, ctx.loaded, layers)
    with progress_bar(n, "scores from the forward pass (sampled store)") as advance:
        made = Projections.compute(engine, groups, ctx.store, ctx.cfg.embed.residue_dtype, advance)
    ctx.projections[:] = [made]  # the newest only: each holds [L, K] floats per protein
    return made


def inputs_record(ctx: StageContext, granularity: str) -> dict:
    """What a training run depends on; its hash decides whether a stored version is reusable."""
    cfg = ctx.cfg
    ds = ctx.dataset
    data = cfg.data.model_dump(mode="json")
    for key in ("positives", "negatives", "spans_file"):  # content matters, not where it lives
        data.pop(key, None)
    proteins = [
        [p.id, p.seq_hash, [[s.start, s.end, s.name] for s in p.spans]] for p in ds.proteins
    ]
    return {
        "package_version": __version__,
        "seed": cfg.seed,
        "granularity": granularity,
        "layers": list(ctx.layers),
        "model_name": ctx.model_name,
        "model_fingerprint": ctx.loaded.fingerprint,
        "data": data,
        "train": cfg.train.model_dump(mode="json"),
        "thresholds": cfg.thresholds.model_dump(mode="json"),
        "embed": {k: getattr(cfg.embed, k) for k in ("window", "tile_overlap", "residue_dtype")},
        "split": ds.split_record(),
        "proteins_hash": content_hash(proteins),
    }


def matches_inputs(ctx: StageContext, version: int, stage: str, what: str) -> bool:
    """Was CAV `version` trained on the current config and data? If not, one warning saying
    that `stage` uses it as stored (`what`), so a version trained under other settings (a
    one-off `--set` on train, edited data) is never used silently."""
    summary = load_summary(ctx.out, ctx.model_name, version)
    granularity = summary.get("granularity") or resolve_granularity(
        ctx.cfg.train.granularity, ctx.dataset.has_spans
    )
    match = content_hash(inputs_record(ctx, granularity)) == summary.get("inputs_hash")
    if not match:
        log.warning(
            "%s: config or data changed since CAV version v%s was trained; %s (run "
            "`esm-tcav train` to train a version on them)",
            stage,
            version,
            what,
        )
    return match


def _reusable(ctx: StageContext, inputs_hash: str) -> dict | None:
    """The newest finished version trained on exactly these inputs (verified), if any: going
    back to a config after a one-off experiment reuses what was trained on it."""
    for version in sorted(finished_versions(ctx.out, ctx.model_name), reverse=True):
        try:
            summary = load_summary(ctx.out, ctx.model_name, version)
        except ArtifactError:
            continue
        if summary.get("inputs_hash") == inputs_hash:
            return _verified(ctx, summary)
    return None


def _verified(ctx: StageContext, summary: dict) -> dict | None:
    """`summary` when every file of its version verifies, else None (with a warning)."""
    version = summary["version"]
    try:
        for layer in summary["layers"]:
            verify_manifest(concept_dir(ctx.out, ctx.model_name, int(layer), version))
            rdir = randoms_dir(ctx.out, ctx.model_name, int(layer), version)
            if rdir.exists():
                verify_manifest(rdir)
    except ArtifactError as exc:
        log.warning("stored version v%s does not verify (%s); training a new version", version, exc)
        return None
    return summary


def _classifier_tensors(clf) -> dict[str, dict[str, np.ndarray]]:
    """Per-file tensors of a fitted classifier (scaler, PCA, head) for safetensors."""
    files: dict[str, dict[str, np.ndarray]] = {}
    w, b = clf.raw_linear()
    head = {"raw_weight": np.asarray(w, np.float64), "raw_bias": np.array([b], np.float64)}
    lr = getattr(clf, "lr_", None)
    if lr is not None:
        head.update(coef=lr.coef_.astype(np.float64), intercept=lr.intercept_.astype(np.float64))
    files["classifier.safetensors"] = head
    scaler = getattr(clf, "scaler_", None)
    if scaler is not None:
        files["scaler.safetensors"] = {
            "mean": scaler.mean_.astype(np.float64),
            "scale": scaler.scale_.astype(np.float64),
        }
    pca = getattr(clf, "pca_", None)
    if pca is not None:
        files["pca.safetensors"] = {
            "components": pca.components_.astype(np.float64),
            "mean": pca.mean_.astype(np.float64),
            "explained_variance": pca.explained_variance_.astype(np.float64),
            "explained_variance_ratio": pca.explained_variance_ratio_.astype(np.float64),
        }
    return files


def _write_layer(
    ctx: StageContext, res: LayerResult, version: int, common: dict, split: dict
) -> None:
    out, model = ctx.out, ctx.model_name
    layer = res.layer
    info = {**common, "layer": layer, "version": version, "hidden_size": res.cav.hidden_size}
    cdir = ArtifactDir(concept_dir(out, model, layer, version))
    rdir = ArtifactDir(randoms_dir(out, model, layer, version)) if res.randoms else None
    try:
        res.cav.save(cdir.tmp / "cav.safetensors")
        for name, tensors in _classifier_tensors(res.classifier).items():
            save_tensors(
                cdir.tmp / name, tensors, {"layer": layer, "classifier": ctx.cfg.train.classifier}
            )
        atomic_write_json(cdir.tmp / "report.json", res.report)
        atomic_write_json(cdir.tmp / "thresholds.json", res.thresholds)
        atomic_write_json(cdir.tmp / "split.json", split)
        if rdir is not None:
            save_randoms(rdir.tmp / "randoms.safetensors", res.randoms)
            atomic_write_json(
                rdir.tmp / "randoms.json",
                {
                    "layer": layer,
                    "mode": ctx.cfg.train.random_mode,
                    "n": len(res.randoms),
                    "layout": "row i of randoms.safetensors (directions, biases) = random CAV i",
                    "randoms": res.random_info,
                },
            )
            rdir.commit({**info, "kind": "randoms"})
        cdir.commit({**info, "kind": "concept"})
    except BaseException:
        cdir.discard()
        if rdir is not None:
            rdir.discard()
        raise


def run_train(ctx: StageContext, force: bool = False) -> dict:
    """Train every tapped layer into a new version, or return the stored version trained from
    the same inputs (config sections, data, split, model) unless `force`."""
    t0 = time.perf_counter()
    cfg = ctx.cfg
    ds = ctx.dataset
    ctx.ensure_embeddings(ds.proteins)
    granularity = resolve_granularity(cfg.train.granularity, ds.has_spans)
    inputs = inputs_record(ctx, granularity)
    inputs_hash = content_hash(inputs)
    if not force:
        stored = _reusable(ctx, inputs_hash)
        if stored is not None:
            log.info("train: inputs unchanged, reusing version v%s", stored["version"])
            set_current(ctx.out, ctx.model_name, stored["version"])
            return {**stored, "reused": True}

    train_pos, train_neg = ds.part("train")
    test_pos, test_neg = ds.part("test")
    train_ex = plan_examples(granularity, train_pos, train_neg, cfg.train.residue_cap, cfg.seed)
    test_ex = plan_examples(
        granularity, test_pos, test_neg, cfg.train.residue_cap, cfg.seed, test=True
    )
    residue_test = threshold_ex = None
    if ds.has_spans:
        residue_test = (
            test_ex if granularity == "residue" else all_residue_examples(test_pos, test_neg)
        )
        threshold_ex = all_residue_examples(train_pos, train_neg)
    fitted = {
        layer: fit_layer(ctx.store, layer, train_ex, cfg, ds.concept, granularity)
        for layer in iter_progress(ctx.layers, "train", "layers")
    }
    source = ctx.store
    # protein examples read pooled vectors; every other example's residues are projected
    training = [
        p for ex in (threshold_ex or train_ex,) if ex.kind != "protein" for p in ex.proteins
    ]
    # every held-out protein (evaluate and detect in this process reuse these projections)
    per_residue_test = any(
        ex is not None and ex.kind != "protein" for ex in (test_ex, residue_test)
    )
    heldout = test_pos + test_neg if per_residue_test else []
    if needs_projections(ctx, training + heldout):
        source = project_residues(
            ctx,
            [
                (training, {n: f.training_directions() for n, f in fitted.items()}),
                (heldout, {n: f.heldout_directions() for n, f in fitted.items()}),
            ],
        )
    results = {}
    for layer, fit in fitted.items():
        results[layer] = evaluate_layer(
            fit, source, train_ex, test_ex, residue_test, cfg, ds.concept, granularity, threshold_ex
        )
        log.info(
            "train: layer %d held-out AUROC %.3f (%.1f s)",
            layer,
            results[layer].report["heldout"]["auroc"],
            results[layer].report["seconds"],
        )
    per_layer = {layer: r.stats for layer, r in results.items()}
    add_qvalues(per_layer, cfg.evaluate.alpha)
    control_rows = _controls(cfg, train_ex, test_ex, results)
    for layer, res in results.items():
        st = per_layer[layer]
        st["controls"] = control_rows.get(layer, {})
        if st["controls"]:
            st["verdict"] += "; the layer " + ctl.words(st["controls"])
        g = grade(
            {
                "q": st.get("q"),
                "auroc": res.report["heldout"]["auroc"],
                "residue_f1": res.report["heldout"]["residue_f1_at_threshold"],
                "controls": st["controls"],
            }
        )
        st["grade"] = g.label
        st["grade_reasons"] = g.reasons
        res.report["controls"] = st["controls"]
        res.report["grade"] = {**g.as_dict(), "rule": GRADE_RULE}

    version = next_version(ctx.out, ctx.model_name)
    split = {
        **ds.split_record(),
        "seed": cfg.seed,
        "test_fraction": cfg.data.test_fraction,
        "grouped_by": "protein",
    }
    common = {
        "concept": ds.concept,
        "model_name": ctx.model_name,
        "model_fingerprint": ctx.loaded.fingerprint,
        "granularity": granularity,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "package_version": __version__,
        "inputs_hash": inputs_hash,
        "seeds": {
            "seed": cfg.seed,
            "split": [cfg.seed, cfg.seed + 1],
            "subsample": [cfg.seed, _SUBSAMPLE],
            "windows": [cfg.seed, _WINDOWS],
            "cv": cfg.seed + _CV,
            "classifier": cfg.seed,
            "randoms": f"[{cfg.seed}, {_RANDOM}, layer, i]",
        },
        "config": cfg.snapshot(),
        "inputs": inputs,
    }
    for layer, res in results.items():
        res.report["stats"] = per_layer[layer]
        res.report["version"] = version
        _write_layer(ctx, res, version, common, split)

    layers_summary = {}
    for layer, res in results.items():
        st, rep = per_layer[layer], res.report
        layers_summary[str(layer)] = {
            "auroc": rep["heldout"]["auroc"],
            "auprc": rep["heldout"]["auprc"],
            "residue_auroc": rep["heldout"]["residue_auroc"],
            "cv_auroc_mean": rep["cv"]["auroc_mean"],
            "train_auroc": rep["train"].get("auroc"),
            **summary_fields(st),
            "residue_f1": rep["heldout"]["residue_f1_at_threshold"],
            "controls": st["controls"],
            "grade": st["grade"],
            "grade_reasons": st["grade_reasons"],
            "decoding": {
                k: v for k, v in (res.thresholds.get("decoding") or {}).items() if k != "grid"
            },
            "thresholds": {m: v["value"] for m, v in res.thresholds["methods"].items()},
            "path": str(concept_dir(ctx.out, ctx.model_name, layer, version)),
        }
    best = select_layer(layers_summary)
    summary = {
        "version": version,
        "concept": ds.concept,
        "model": ctx.model_name,
        "fingerprint": ctx.loaded.fingerprint,
        "granularity": granularity,
        "n_random": cfg.train.n_random,
        "random_mode": cfg.train.random_mode,
        "alpha": cfg.evaluate.alpha,
        "inputs_hash": inputs_hash,
        "created": common["created"],
        "layers": layers_summary,
        "best_layer": best,
        "best_layer_chosen_by": SELECTION,
        "grade_rule": GRADE_RULE,
        "sets": {
            "auroc, auprc, residue_auroc, residue_f1, p, q, controls, grade": "held-out test "
            "proteins (reported only)",
            "cv_auroc_mean, best_layer, thresholds, decoding, calibration": "training proteins",
        },
        "seconds": round(time.perf_counter() - t0, 2),
        "path": str(summary_path(ctx.out, ctx.model_name, version)),
    }
    atomic_write_json(summary_path(ctx.out, ctx.model_name, version), summary)
    set_current(ctx.out, ctx.model_name, version)
    return {**summary, "reused": False}
