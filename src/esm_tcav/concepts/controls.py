"""Controls beyond chance: does the model's layer know more than the amino acids, or than where
in the protein the residues sit?

Both controls train the same classifier (`train.classifier`, same C and PCA) on a model-free
representation of the same training examples and score the same held-out examples as the layer:

- sequence-only baseline (`sequence_features`): one-hot amino acids in a window of
  ±`window` residues around each residue (21 channels: the 20 standard residues and "other";
  positions past a terminus are all-zero), averaged over the example's residues (a span or a
  protein becomes its windowed composition);
- position control (`position_features`): relative position, log distance to each terminus,
  closeness to each terminus within 10/30/60 residues, ten relative-position bins and log length,
  averaged the same way.

`compare` gives the layer-minus-control AUROC with a percentile bootstrap interval that resamples
whole proteins (paired: both score vectors see the same replicate). The layer "beats" a control
when the interval's lower end is above 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from esm_tcav.concepts.cav import make_classifier
from esm_tcav.concepts.stats import RankedScores, resample_proteins

AA = "ACDEFGHIKLMNPQRSTVWY"
_INDEX = np.full(128, 20, dtype=np.int64)
for _i, _a in enumerate(AA):
    _INDEX[ord(_a)] = _i
CONTROLS = ("sequence", "position")
WORDS = {
    "sequence": "sequence-only baseline (one-hot amino acids in a window, same classifier)",
    "position": "position control (relative position and distance to each terminus)",
}


def _onehot_window(seq: str, window: int) -> np.ndarray:
    """[L, (2w+1)*21] one-hot of the residues at offsets -w..w (zeros past a terminus)."""
    idx = _INDEX[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]
    L = len(seq)
    eye = np.eye(21, dtype=np.float32)[idx]
    out = np.zeros((L, 2 * window + 1, 21), np.float32)
    for k, off in enumerate(range(-window, window + 1)):
        lo, hi = max(0, -off), min(L, L - off)
        if lo < hi:
            out[lo:hi, k] = eye[lo + off : hi + off]
    return out.reshape(L, -1)


def _position(seq: str, _window: int = 0) -> np.ndarray:
    L = len(seq)
    i = np.arange(L, dtype=np.float64)
    d_n, d_c = i, L - 1 - i
    cols = [(i + 0.5) / L, np.log1p(d_n), np.log1p(d_c)]
    for cut in (10, 30, 60):
        cols += [(d_n < cut).astype(float), (d_c < cut).astype(float)]
    bins = np.minimum((10 * i / L).astype(int), 9)
    cols += [(bins == b).astype(float) for b in range(10)]
    cols.append(np.full(L, np.log(L)))
    return np.stack(cols, axis=1).astype(np.float32)


def _pooled(examples, per_residue: Callable[[str, int], np.ndarray], window: int) -> np.ndarray:
    """Mean of per-residue features over each example's residues [start, end)."""
    X = None
    for pi in np.unique(examples.prot):
        rows = np.nonzero(examples.prot == pi)[0]
        F = per_residue(examples.proteins[pi].sequence, window)
        c = np.vstack([np.zeros((1, F.shape[1])), np.cumsum(F, axis=0, dtype=np.float64)])
        s, e = examples.start[rows], examples.end[rows]
        if X is None:
            X = np.zeros((len(examples), F.shape[1]), np.float32)
        X[rows] = (c[e] - c[s]) / (e - s)[:, None]
    return X if X is not None else np.zeros((0, 0), np.float32)


def sequence_features(examples, window: int = 7) -> np.ndarray:
    return _pooled(examples, _onehot_window, window)


def position_features(examples) -> np.ndarray:
    return _pooled(examples, _position, 0)


FEATURES = {"sequence": sequence_features, "position": lambda ex, window=0: position_features(ex)}


def control_scores(name: str, train_ex, test_ex, tc, seed: int, window: int = 7) -> np.ndarray:
    """Held-out scores of control `name` ("sequence" or "position"): the CAV classifier fitted
    on the control's features of the training examples."""
    feats = FEATURES[name]
    clf = make_classifier(tc.classifier, pca_components=tc.pca_components, C=tc.C, seed=seed)
    clf.fit(feats(train_ex, window), train_ex.y.astype(np.int64))
    return np.asarray(clf.decision_function(feats(test_ex, window)), np.float64)


def compare(
    test_ex,
    layer_scores: dict[int, np.ndarray],
    controls: dict[str, np.ndarray],
    n_boot: int,
    alpha: float,
    seed: int,
) -> dict[int, dict]:
    """Per layer and control: AUROCs, the layer-minus-control difference and its interval.

    One bootstrap over proteins (positives and negatives resampled apart) serves every layer and
    control, so all differences are paired on the same replicates.
    """
    y = test_ex.y
    ranked = {("L", k): RankedScores(v, y) for k, v in layer_scores.items()}
    ranked.update({("C", k): RankedScores(v, y) for k, v in controls.items()})
    point = {key: r.metrics()[0] for key, r in ranked.items()}
    is_pos = test_ex.protein_is_pos
    pos_g, neg_g = np.nonzero(is_pos)[0], np.nonzero(~is_pos)[0]
    rng = np.random.default_rng(seed)
    reps: dict = {key: [] for key in ranked}
    for _ in range(n_boot):
        w = resample_proteins(rng, pos_g, neg_g, is_pos.size)[test_ex.prot]
        for key, r in ranked.items():
            reps[key].append(r.metrics(w)[0])
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    out: dict[int, dict] = {}
    for layer in layer_scores:
        row = {}
        for name in controls:
            d = np.asarray(reps[("L", layer)]) - np.asarray(reps[("C", name)])
            d = d[np.isfinite(d)]
            ci = [float(np.percentile(d, lo)), float(np.percentile(d, hi))] if d.size else None
            delta = point[("L", layer)] - point[("C", name)]
            row[name] = {
                "what": WORDS[name],
                "auroc": point[("C", name)],
                "delta_auroc": delta,
                "delta_ci": ci,
                "beaten": bool(ci is not None and ci[0] > 0),
            }
        out[layer] = row
    meta = {
        "n_boot": n_boot,
        "level": 1 - alpha,
        "resampled": "proteins, within each class (paired across layers and controls)",
        "set": "held-out test proteins (reported only, never used to choose)",
    }
    for row in out.values():
        row["_bootstrap"] = meta
    return out


def words(row: dict) -> str:
    """'beats the sequence-only baseline (ΔAUROC +0.12 [0.08, 0.15]) and ...' for a verdict."""
    parts = []
    for name in CONTROLS:
        c = row.get(name)
        if not c:
            continue
        ci = c.get("delta_ci")
        band = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
        verb = "beats" if c["beaten"] else "does not beat"
        label = "the sequence-only baseline" if name == "sequence" else "the position control"
        parts.append(
            f"{verb} {label} (AUROC {c['auroc']:.3f}; difference {c['delta_auroc']:+.3f}{band})"
        )
    return "; ".join(parts)
