"""Building a concept library: train every concept of a library config and index it.

The orchestration half of the library (the index itself lives in `concepts.library`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from esm_tcav.concepts.concept import Concept
from esm_tcav.concepts.grade import grade
from esm_tcav.concepts.library import INDEX, add_to_library, read_index, write_table
from esm_tcav.config import (
    STEPS,
    ConceptSpec,
    Config,
    HmmCheck,
    check_concept_name,
    config_from_dict,
    load_library_config,
)
from esm_tcav.errors import ArtifactError, ConfigError, ModelMismatchError
from esm_tcav.io.files import (
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    sha256_file,
)
from esm_tcav.io.locks import folder_lock
from esm_tcav.io.logs import detach, log_to_file
from esm_tcav.io.proteins import Protein
from esm_tcav.io.readers import read_pdna, read_proteins, read_tmbed
from esm_tcav.io.writers import write_fasta, write_jsonl
from esm_tcav.run.dataset import split_by_protein
from esm_tcav.ui import console, iter_progress

if TYPE_CHECKING:
    from esm_tcav.engine.store import EmbeddingStore
    from esm_tcav.models.base import ProteinLM
    from esm_tcav.run.context import RunContext

log = logging.getLogger("esm_tcav.library")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ---------------------------------------------------------------------- derived data files


def seeded_cap(proteins: list[Protein], n: int, seed: int) -> list[Protein]:
    """At most n proteins, a seeded sample kept in file order (so caps are reproducible)."""
    if len(proteins) <= n:
        return proteins
    keep = set(np.random.default_rng(seed).choice(len(proteins), n, replace=False).tolist())
    return [p for i, p in enumerate(proteins) if i in keep]


def _derive_data(spec: ConceptSpec, base: Path, folder: Path, seed: int) -> tuple[dict, dict]:
    """The data section (and split counts) of a tmbed/pdna concept, as files in `folder`.

    Spans are written 1-based inclusive, as every file a user reads.
    """
    folder.mkdir(parents=True, exist_ok=True)

    def resolve(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else base / q

    parts: dict[str, tuple[list[Protein], list[Protein]]] = {}
    if spec.tmbed is not None:
        label = spec.tmbed.label
        for part, src in (("train", spec.tmbed.train), ("test", spec.tmbed.test)):
            proteins = read_tmbed(resolve(src))
            pos = [p for p in proteins if p.spans_named(label)]
            neg = [p for p in proteins if not p.spans_named(label)]
            parts[part] = (pos, neg)
        name = label
    else:
        src = spec.pdna
        name = "dna_binding"
        negs = read_proteins(resolve(src.negatives))
        test_neg_ids = split_by_protein([p.id for p in negs], src.negatives_test_fraction, seed)
        parts["train"] = (
            read_pdna(resolve(src.train_sequences), resolve(src.train_labels), name),
            [p for p in negs if p.id not in test_neg_ids],
        )
        parts["test"] = (
            read_pdna(resolve(src.test_sequences), resolve(src.test_labels), name),
            [p for p in negs if p.id in test_neg_ids],
        )
    counts = {}
    for part, (pos, neg) in parts.items():
        cap = spec.max_train if part == "train" else spec.max_test
        pos, neg = seeded_cap(pos, cap, seed), seeded_cap(neg, cap, seed + 1)
        write_jsonl(folder / f"{part}_positives.jsonl", pos, [name])
        write_fasta(folder / f"{part}_negatives.fasta", neg)
        counts[part] = {"positives": len(pos), "negatives": len(neg)}
    data = {
        "concept": spec.name,
        "positives": str(folder / "train_positives.jsonl"),
        "negatives": str(folder / "train_negatives.fasta"),
        "test_positives": str(folder / "test_positives.jsonl"),
        "test_negatives": str(folder / "test_negatives.fasta"),
        "positives_format": "jsonl",
        "negatives_format": "fasta",
        "span_names": [name],
    }
    return data, counts


# ---------------------------------------------------------------------- building


def _shared_context(
    cfg: Config,
    loaded: ProteinLM | None,
    store_root: Path,
    stores: dict[Path, EmbeddingStore] | None = None,
    prepare: bool = True,
) -> RunContext:
    """A RunContext that reuses one loaded model and one embedding store for every concept
    (the config's `store.path` when set, shared beyond this library, else `store_root`; the
    same object from `stores` when given), validated (inputs, model) and, with `prepare`, its
    folder created."""
    from esm_tcav.engine.store import EmbeddingStore
    from esm_tcav.run.context import RunContext  # noqa: F811 (loads the model stack)

    ctx = RunContext(cfg)
    if loaded is not None:
        ctx.use_model(loaded)  # every concept of a build has the same model section
    ctx.validate()
    if prepare:
        ctx.prepare()
    root = Path(cfg.store_dir if cfg.store.path else store_root)
    stores = {} if stores is None else stores
    if root not in stores:
        stores[root] = EmbeddingStore(root, ctx.loaded.fingerprint, cfg.embed.residue_dtype)
    ctx.use_store(stores[root])
    return ctx


def _embed_union(contexts: list[tuple]) -> None:
    """One embedding pass over the union of every concept's proteins (and the background
    population they draw from), before any concept trains: each sequence once, in batches
    that mix concepts, so training then only reads the store."""
    from esm_tcav.engine.embed import embed_into_store
    from esm_tcav.engine.store import union_keep
    from esm_tcav.ui import progress_bar

    by_store: dict[int, list] = {}
    for _, _, ctx in contexts:
        by_store.setdefault(id(ctx.store), []).append(ctx)
    for ctxs in by_store.values():
        ctx = ctxs[0]
        proteins = [p for c in ctxs for p in c.dataset.proteins]
        # each concept's residue states as its own run keeps them (all, or its training sample)
        keep = union_keep((c.residue_keep, c.dataset.proteins) for c in ctxs)
        todo = ctx.store.missing(proteins, ctx.layers, keep)
        if not todo:
            continue
        with progress_bar(len(todo), "library embed") as advance:
            done = embed_into_store(
                ctx.cfg, ctx.loaded, todo, ctx.layers, ctx.store, progress=advance, keep=keep
            )
        log.info(
            "library: %d distinct proteins embedded in one pass (%d of the concepts' proteins "
            "were stored already)",
            done,
            len({p.seq_hash for p in proteins}) - done,
        )


def _file_record(path: Path | None) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    return {"path": str(path), "sha256": sha256_file(Path(path))}


def train_concept(
    ctx: RunContext, hmm: HmmCheck | None = None, base: Path | None = None
) -> tuple[Concept, dict]:
    """Train, evaluate and detect one concept in its run folder; returns it with its metrics.

    The layer is the one with the best held-out AUROC; residue F1 and IoU come from detecting
    spans on the held-out proteins at that layer with the concept's threshold.
    """
    from esm_tcav.concepts.artifacts import best_layer, load_concept
    from esm_tcav.concepts.evaluate import run_evaluate
    from esm_tcav.concepts.train import run_train
    from esm_tcav.localize.detect import run_detect

    cfg = ctx.cfg
    trained = run_train(ctx)
    evaluated = run_evaluate(ctx)
    layer = int(best_layer(ctx.out, ctx.model_name))
    detected = run_detect(ctx)
    ctx.projections.clear()  # a sampled store's projections: this concept's stages are done
    if int(detected["layer"]) != layer:
        raise ArtifactError(f"{ctx.out}: detect used layer {detected['layer']}, expected {layer}")
    art = load_concept(
        ctx.out,
        ctx.model_name,
        layer,
        int(trained["version"]),
        ctx.loaded.fingerprint,
        ctx.loaded.spec.hidden_size,
    )
    dc = cfg.detect
    rule = art.with_rule(
        cfg.thresholds.method, dc.smoothing_window, dc.min_span_length, dc.merge_gap
    ).rule()
    ev = evaluated["layers"][str(layer)]
    tr = trained["layers"][str(layer)]
    det = detected.get("metrics") or {}
    residue = det.get("residue") or {}
    split = art.split or {}
    metrics = {
        "residue_f1": residue.get("f1"),
        "residue_precision": residue.get("precision"),
        "residue_recall": residue.get("recall"),
        "mean_iou": det.get("mean_iou"),
        "hit_rate_iou50": det.get("hit_rate_iou50"),
        "false_spans_per_kres": det.get("false_spans_per_kres"),
        "auroc": ev.get("auroc"),
        "auroc_ci": ev.get("auroc_ci"),
        "auprc": ev.get("auprc"),
        "p": tr.get("p"),
        "min_p": tr.get("min_p"),
        "q_layers": tr.get("q"),
        "p_by_layer": {k: v.get("p") for k, v in trained["layers"].items()},
        "auroc_by_layer": {k: v.get("auroc") for k, v in trained["layers"].items()},
        "random_mean": tr.get("random_mean"),
        "random_sd": tr.get("random_sd"),
        "n_random": trained.get("n_random"),
        "granularity": trained.get("granularity"),
        "alpha": cfg.evaluate.alpha,
        "test_proteins": f"{len(split.get('test', {}).get('positives', []))}/"
        f"{len(split.get('test', {}).get('negatives', []))}",
        "train_proteins": f"{len(split.get('train', {}).get('positives', []))}/"
        f"{len(split.get('train', {}).get('negatives', []))}",
        "threshold_calibrated_on": art.thresholds.get(
            "calibrated_on", art.thresholds.get("computed_on")
        ),
        "cav_version": int(trained["version"]),
        "run": str(ctx.out),
        "detections": detected.get("output"),
    }
    # the grade, with the detected spans' held-out residue F1 (the decoding the library uses)
    g = grade(
        {
            "q": tr.get("q"),
            "auroc": ev.get("auroc"),
            "residue_f1": residue.get("f1", tr.get("residue_f1")),
            "controls": tr.get("controls"),
        }
    )
    metrics.update(
        grade=g.label,
        grade_reasons=g.reasons,
        controls={k: v for k, v in (tr.get("controls") or {}).items() if not k.startswith("_")},
        calibration=art.thresholds.get("calibration"),
        decoding_chosen_on=(art.thresholds.get("decoding") or {}).get("chosen_on"),
    )
    if g.weak:
        log.warning(
            "library: concept %s is graded %s (%s); scan leaves it out unless --include-weak",
            cfg.data.concept,
            g.label,
            "; ".join(g.reasons),
        )
    if hmm is not None:
        metrics.update(
            hmm_agreement(
                ctx, hmm, base or Path(cfg.base_dir), Path(detected["output"]) / "spans.tsv"
            )
        )
    cav = dataclasses.replace(art.cav, concept=cfg.data.concept, meta={})
    return Concept(cav, **rule, metrics=metrics), metrics


def hmm_agreement(ctx: RunContext, hmm: HmmCheck, base: Path, spans_tsv: Path) -> dict:
    """Compare the CAV's held-out spans with a profile HMM built from a seed alignment.

    The HMM (pyhmmer, built from e.g. the Pfam zf-C2H2 seed) annotates the held-out proteins
    independently of the training labels; the CAV spans are scored against those HMM domains
    (residue F1, mean IoU), and so is the HMM against the labels, for scale.
    """
    try:
        import pyhmmer
    except ImportError:
        raise ConfigError(
            "hmm_agreement needs pyhmmer: pip install 'esm-tcav[hmm]' (or drop hmm_agreement)"
        ) from None

    from esm_tcav.localize.spans import evaluate_spans

    seed = Path(hmm.seed_alignment)
    seed = seed if seed.is_absolute() else base / seed
    alphabet = pyhmmer.easel.Alphabet.amino()
    with pyhmmer.easel.MSAFile(str(seed), digital=True, alphabet=alphabet) as fh:
        msa = fh.read()
    msa.name = seed.stem.encode()
    profile, _, _ = pyhmmer.plan7.Builder(alphabet).build_msa(
        msa, pyhmmer.plan7.Background(alphabet)
    )
    test_pos, test_neg = ctx.dataset.part("test")
    proteins = test_pos + test_neg
    seqs = [
        pyhmmer.easel.TextSequence(name=p.id.encode(), sequence=p.sequence).digitize(alphabet)
        for p in proteins
    ]
    found: dict[str, list[tuple[int, int]]] = {}
    for hits in pyhmmer.hmmsearch([profile], seqs, domE=hmm.domain_evalue, E=10.0):
        for hit in hits:
            for dom in hit.domains:
                if dom.i_evalue <= hmm.domain_evalue:
                    name = hit.name.decode() if isinstance(hit.name, bytes) else hit.name
                    found.setdefault(name, []).append((int(dom.env_from), int(dom.env_to)))
    predicted: dict[str, list[tuple[int, int]]] = {}
    with spans_tsv.open() as fh:
        next(fh)
        for line in fh:
            pid, start, end = line.split("\t")[:3]
            predicted.setdefault(pid, []).append((int(start), int(end)))
    lengths = {p.id: len(p.sequence) for p in proteins}
    hmm_truth = {pid: _merge_spans(v) for pid, v in found.items()}
    cav_vs_hmm = evaluate_spans(
        predicted, hmm_truth, lengths, [p.id for p in proteins if p.id not in hmm_truth]
    )
    labels = {p.id: list(p.spans) for p in test_pos if p.spans}
    hmm_vs_labels = evaluate_spans(hmm_truth, labels, lengths, [p.id for p in test_neg])
    return {
        "hmm_model": f"{seed.name} ({len(msa.sequences)} sequences, pyhmmer "
        f"{pyhmmer.__version__}, domain i-E <= {hmm.domain_evalue})",
        "hmm_domains": sum(len(v) for v in hmm_truth.values()),
        "hmm_residue_f1": (cav_vs_hmm["residue"] or {}).get("f1"),
        "hmm_mean_iou": cav_vs_hmm["mean_iou"],
        "hmm_vs_labels_residue_f1": (hmm_vs_labels["residue"] or {}).get("f1"),
    }


def _merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _model_record(loaded, cfg: Config | None = None) -> dict:
    """The model a library belongs to; `path`/`registry_file` let `scan` reload it unaided."""
    rec = {
        "name": loaded.spec.name,
        "fingerprint": loaded.fingerprint,
        "hidden_size": loaded.spec.hidden_size,
        "source": loaded.source,
    }
    if cfg is not None:
        for key in ("path", "registry_file"):
            value = cfg.path(getattr(cfg.model, key))
            if value is not None:
                rec[key] = str(Path(value).resolve())
    return rec


def _provenance(cfg: Config, extra: dict, counts: dict | None = None) -> dict:
    d = cfg.data
    files = {
        k: _file_record(cfg.path(getattr(d, k)))
        for k in ("positives", "negatives", "spans_file", "test_positives", "test_negatives")
    }
    split = (
        "fixed test files"
        if d.test_positives
        else (f"random by protein, test fraction {d.test_fraction}, seed {cfg.seed}")
    )
    return {
        **extra,
        "split": extra.get("split", split),
        "files": {k: v for k, v in files.items() if v},
        **({"counts": counts} if counts else {}),
    }


def recompute_q(root: Path) -> None:
    """Benjamini-Hochberg q across every layer of every concept of the library (in place).

    A library is many tests at once: a concept's q must account for all of them. Uses the
    empirical p of each layer recorded at training (`metrics.p_by_layer`).
    """
    from esm_tcav.concepts.stats import is_significant, qvalues

    doc = read_index(root)
    keys, ps = [], []
    for i, e in enumerate(doc["concepts"]):
        for layer, p in ((e.get("metrics") or {}).get("p_by_layer") or {}).items():
            keys.append((i, int(layer)))
            ps.append(p)
    for (i, layer), q in zip(keys, qvalues(ps), strict=True):
        e = doc["concepts"][i]
        if layer == int(e["layer"]):
            m = e["metrics"]
            m["q"] = q
            m["q_tests"] = len(ps)
            m["significant"] = is_significant(q, m.get("alpha", 0.05))
    atomic_write_json(root / INDEX, doc)
    write_table(root)
    from esm_tcav.report.similarity import similarity_map

    similarity_map(root)  # the library as a map: report.md gets the clustered heatmap


@dataclasses.dataclass
class ConceptJob:
    """One concept to train into a library: its run-config data section and its own sections.

    Library YAML concepts and concepts read from annotation files (`run.annotations`) both become
    jobs, so they train the same way.
    """

    name: str
    data: dict
    sections: dict = dataclasses.field(default_factory=dict)  # embed/train/.../detect overrides
    provenance: dict = dataclasses.field(default_factory=dict)
    counts: dict | None = None
    hmm: HmmCheck | None = None


def _spec_job(c: ConceptSpec, base: Path, work: Path, seed: int) -> ConceptJob:
    counts = None
    if c.data is not None:
        data = {**c.data, "concept": c.name}
    else:
        data, counts = _derive_data(c, base, work / c.name / "data", seed)
    extra = dict(c.provenance)
    if c.tmbed is not None:
        extra.setdefault(
            "split",
            f"TMbed label {c.tmbed.label}: positives = proteins "
            f"carrying it; train {c.tmbed.train}, test {c.tmbed.test}",
        )
    if c.pdna is not None:
        extra.setdefault(
            "split",
            f"train {c.pdna.train_sequences}, test "
            f"{c.pdna.test_sequences}; negatives {c.pdna.negatives} split "
            f"by protein (test fraction {c.pdna.negatives_test_fraction})",
        )
    return ConceptJob(c.name, data, _sections(c), extra, counts, c.hmm_check)


def _sections(c) -> dict:
    """A concept spec's own run-config sections (over the library's defaults)."""
    return {
        k: getattr(c, k)
        for k in ("embed", "train", "evaluate", "thresholds", "detect")
        if getattr(c, k)
    }


def _check_concept_configs(spec, config_path: Path) -> None:
    """Each concept's run config (model, defaults, its own sections) validated before anything
    is written, so a typo'd key is one error line and no half-built library folder."""
    base = config_path.parent.resolve()
    for c in spec.concepts:
        data = c.data or {"positives": f"(the concept's {'tmbed' if c.tmbed else 'pdna'} files)"}
        doc = _merge(spec.defaults, {"seed": spec.seed, "model": spec.model, "data": data})
        config_from_dict(_merge(doc, _sections(c)), f"{config_path}: concept {c.name}", base)


def build_library(
    config_path: str | Path, out: str | Path, loaded=None, store: str | Path | None = None
) -> dict:
    """`esm-tcav library build`: train, evaluate and store every concept of a library config.

    Each concept runs in `<out>/work/<name>/` with one shared model and embedding store, so a
    protein used by two concepts is embedded once; an unchanged concept reuses its trained
    version (train's inputs hash) but is still written as a new library version. The store is
    `store` (`--store`), else `defaults.store.path` of the library config, else
    `<out>/work/embeddings`.
    """
    config_path = Path(config_path)
    spec = load_library_config(config_path)
    _check_concept_configs(spec, config_path)
    out = Path(out).resolve()  # derived data paths must not depend on the working directory
    check_output_dir(out, "library folder")
    with folder_lock(out, what="esm-tcav library build"):
        handler = log_to_file(out / "logs" / "library.log")
        try:
            return _build_locked(config_path, spec, out, loaded, store)
        finally:
            detach(handler)


def _build_locked(
    config_path: Path, spec, out: Path, loaded, store: str | Path | None = None
) -> dict:

    base = config_path.parent.resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / "library.config.yaml", config_path.read_text())
    jobs = [_spec_job(c, base, work, spec.seed) for c in spec.concepts]
    return train_jobs(
        jobs, out, spec.model, spec.defaults, spec.seed, base, str(config_path), loaded, store
    )


def train_jobs(
    jobs: list[ConceptJob],
    out: Path,
    model: dict,
    defaults: dict,
    seed: int,
    base: Path,
    origin: str,
    loaded=None,
    store: str | Path | None = None,
) -> dict:
    """Train every job into the library at `out` (one model, one embedding store), then q."""
    import time

    out = Path(out).resolve()
    work = out / "work"
    results = {}
    contexts: list[tuple[ConceptJob, Config, RunContext]] = []
    stores: dict[Path, EmbeddingStore] = {}  # one store object per folder, shared by concepts
    for job in jobs:
        folder = work / job.name
        doc = _merge(
            defaults,
            {
                "output_dir": str(folder.resolve()),
                "seed": seed,
                "model": model,
                "data": job.data,
                **job.sections,
            },
        )
        doc["detect"] = {**doc.get("detect", {}), "layer": "best"}
        if store is not None:
            doc["store"] = {"path": str(Path(store).resolve())}
        doc["steps"] = list(STEPS[: STEPS.index("detect") + 1])  # no tcav, no report
        cfg = config_from_dict(doc, f"{origin}: concept {job.name}", base)
        ctx = _shared_context(cfg, loaded, work / "embeddings", stores)
        loaded = ctx.loaded
        contexts.append((job, cfg, ctx))
    _embed_union(contexts)
    for k, (job, cfg, ctx) in enumerate(iter_progress(contexts, "library build", "concepts")):
        t0 = time.perf_counter()
        log.info("library: concept %s (%s)", job.name, cfg.out)
        console.print(f"concept {job.name} ({k + 1}/{len(contexts)}):")  # heads its stage lines
        concept, metrics = train_concept(ctx, job.hmm, base)
        concept.provenance = _provenance(cfg, dict(job.provenance), job.counts)
        add_to_library(out, _model_record(loaded, cfg), concept)
        results[job.name] = round(time.perf_counter() - t0, 1)
    recompute_q(out)
    doc = read_index(out)
    return {
        "library": str(out),
        "model": doc["model"],
        "seconds": results,
        "concepts": {
            e["name"]: {
                k: e["metrics"].get(k)
                for k in (
                    "residue_f1",
                    "mean_iou",
                    "auroc",
                    "p",
                    "q",
                    "significant",
                    "hmm_residue_f1",
                )
            }
            | {"layer": e["layer"], "threshold": e["threshold"], "version": e["version"]}
            for e in doc["concepts"]
        },
        "table": str(out / "report.md"),
    }


def add_concept(library_dir: str | Path, cfg: Config, loaded=None) -> dict:
    """`esm-tcav library add`: train one concept from a run config and add it to a library.

    The run goes to `<library>/work/<concept>/` (the config's output_dir is not used); the
    library's model must be the config's model (checked before any training).
    """
    root = Path(library_dir).resolve()
    name = check_concept_name(cfg.data.concept)
    if (root / INDEX).is_file():
        have = read_index(root)["model"]
    else:
        have = None
    cfg = cfg.model_copy(deep=True)
    cfg.output_dir = str((root / "work" / name).resolve())
    cfg.detect.layer = "best"
    check_output_dir(root, "library folder")
    ctx = _shared_context(cfg, loaded, root / "work" / "embeddings", prepare=False)
    if have is not None and have.get("fingerprint") != ctx.loaded.fingerprint:
        raise ModelMismatchError(
            f"{root / INDEX}: library of model {have.get('name')!r} (fingerprint "
            f"{have.get('fingerprint')}) but the config loads {ctx.loaded.spec.name!r} "
            f"(fingerprint {ctx.loaded.fingerprint}); add concepts trained on the library's model"
        )
    with folder_lock(root, what="esm-tcav library add"):
        handler = log_to_file(root / "logs" / "library.log")
        try:
            ctx.prepare()
            return _add_locked(ctx, cfg, root, name)
        finally:
            detach(handler)


def _add_locked(ctx: RunContext, cfg: Config, root: Path, name: str) -> dict:
    concept, _ = train_concept(ctx)
    concept.provenance = _provenance(cfg, {"source": "esm-tcav library add"})
    concept = add_to_library(root, _model_record(ctx.loaded, cfg), concept)
    recompute_q(root)
    entry = next(e for e in read_index(root)["concepts"] if e["name"] == name)
    return {
        "library": str(root),
        "concept": name,
        "version": entry["version"],
        "layer": entry["layer"],
        "threshold": entry["threshold"],
        "metrics": {
            k: entry["metrics"].get(k)
            for k in ("residue_f1", "mean_iou", "auroc", "p", "q", "significant")
        },
    }
