"""The tokenizer's quality figures: reconstruction, usage, collisions.

docs/design.md §2.1 lists them: reconstruction error, code usage per level
and the full-SID collision rate; agreement (purity, NMI) with known
labels (category, and the generator's sub-topics and topics) tells how
much of the item structure the SIDs keep. Plain numpy, plain JSON types.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hisac_tf.data.feature_spec import ITEM_SUBTOPIC


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0].astype(np.float64)
    p /= p.sum()
    return float(-(p * np.log(p)).sum())


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, ai = np.unique(a, return_inverse=True, axis=0)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), np.int64)
    np.add.at(table, (ai.ravel(), bi.ravel()), 1)
    return table  # [clusters, labels]


def purity(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Σ_cluster max_label count / N (clusters: [N] or [N, L] rows)."""
    table = _contingency(clusters, labels)
    return float(table.max(axis=1).sum() / table.sum())


def nmi(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Normalised mutual information, 2 I(U;V) / (H(U) + H(V)).

    The arithmetic-mean normalisation (scikit-learn's default); 1.0 when
    both partitions are a single block.
    """
    table = _contingency(clusters, labels).astype(np.float64)
    n = table.sum()
    pu = table.sum(axis=1) / n
    pv = table.sum(axis=0) / n
    hu = _entropy(table.sum(axis=1))
    hv = _entropy(table.sum(axis=0))
    if hu + hv == 0:
        return 1.0
    nz = table > 0
    pij = table[nz] / n
    outer = (pu[:, None] * pv[None, :])[nz]
    mi = float((pij * np.log(pij / outer)).sum())
    return float(2.0 * mi / (hu + hv))


def usage_of_counts(counts: np.ndarray) -> dict:
    """Codes used, their fraction and perplexity of one level's [K] counts."""
    counts = np.asarray(counts)
    k = counts.size
    perplexity = float(np.exp(_entropy(counts))) if counts.sum() else 0.0
    return {
        "codebook_size": int(k),
        "codes_used": int((counts > 0).sum()),
        "fraction_used": float((counts > 0).mean()),
        "perplexity": perplexity,
        "normalized_perplexity": perplexity / k,
    }


def code_usage(sids: np.ndarray, codebook_sizes: Sequence[int]) -> list:
    """Per level: codes used by >= 1 item, their fraction and perplexity."""
    return [
        {"level": level + 1,
         **usage_of_counts(np.bincount(sids[:, level], minlength=k))}
        for level, k in enumerate(codebook_sizes)
    ]


def collision_stats(sids: np.ndarray) -> dict:
    """Full-SID collisions: items sharing their whole SID with another."""
    _, inverse, counts = np.unique(
        sids, axis=0, return_inverse=True, return_counts=True)
    per_item = counts[inverse.ravel()]
    return {
        "distinct_sids": int(counts.size),
        "collision_rate": float((per_item > 1).mean()),
        "max_items_per_sid": int(counts.max()),
        "mean_items_per_sid": float(counts.mean()),
    }


def latent_stats(latents: np.ndarray, codebooks: Sequence[np.ndarray],
                 sids: np.ndarray) -> dict:
    """Scale of the latents z [V, Ds] and of the prototypes ẑ they route to.

    latent_rms = sqrt(mean z²) over items and dimensions and
    latent_variance its square (the s² that soft routing measures
    distances in); prototype_rms the same of ẑ_i = Σ_l E^l[c_{i,l}] (the
    codeword sums that become agent prototypes); latent_mean_sq_norm =
    mean ||z_i||²; quantization_mse = mean over items of ||z_i − ẑ_i||²
    and relative_quantization_mse = quantization_mse / latent_mean_sq_norm
    (scale free).
    """
    z = np.asarray(latents, np.float64)
    zhat = sum(np.asarray(book, np.float64)[sids[:, level]]
               for level, book in enumerate(codebooks))
    mean_sq_norm = float(np.mean(np.sum(z ** 2, axis=1)))
    quantization = float(np.mean(np.sum((z - zhat) ** 2, axis=1)))
    return {
        "latent_rms": float(np.sqrt(np.mean(z ** 2))),
        "latent_variance": float(np.mean(z ** 2)),
        "prototype_rms": float(np.sqrt(np.mean(zhat ** 2))),
        "latent_mean_sq_norm": mean_sq_norm,
        "quantization_mse": quantization,
        "relative_quantization_mse": quantization / max(mean_sq_norm, 1e-30),
    }


def _agreement(sids: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "full_sid": {"purity": purity(sids, labels),
                     "nmi": nmi(sids, labels)},
        "level_1": {"purity": purity(sids[:, :1], labels),
                    "nmi": nmi(sids[:, :1], labels)},
        "num_labels": int(np.unique(labels).size),
    }


def quality_report(
    sids: np.ndarray,
    codebook_sizes: Sequence[int],
    sq_error: np.ndarray,
    sq_error_unquantized: np.ndarray,
    total_variance: float,
    content_dim: int,
    categories: np.ndarray,
    subtopics: np.ndarray,
    subtopics_per_topic: int | None = None,
) -> dict:
    """The tokenizer's quality figures (all plain JSON types).

    reconstruction_mse: mean over items and dimensions of (x - xhat)^2
    through the quantiser; relative_mse: Σ||x - xhat||^2 / Σ||x - mean||^2
    (1.0 = predicting the mean); *_unquantized: the same decoding z
    itself. Agreement with the true sub-topic (and topic, when
    `subtopics_per_topic` is given and sub-topics are numbered 1.. topic
    by topic) is reported when every item has a subtopic_id; agreement
    with category_id always.
    """
    v = sids.shape[0]
    report = {
        "num_items": int(v),
        "reconstruction_mse": float(sq_error.sum() / (v * content_dim)),
        "relative_mse": float(sq_error.sum() / max(
            total_variance * v, 1e-30)),
        "reconstruction_mse_unquantized": float(
            sq_error_unquantized.sum() / (v * content_dim)),
        "relative_mse_unquantized": float(sq_error_unquantized.sum() / max(
            total_variance * v, 1e-30)),
        "code_usage": code_usage(sids, codebook_sizes),
        "full_sid": collision_stats(sids),
        "vs_category": _agreement(sids, categories),
    }
    if np.all(subtopics > 0):
        report["vs_subtopic"] = _agreement(sids, subtopics)
        if subtopics_per_topic:
            topics = (subtopics - 1) // subtopics_per_topic + 1
            report["vs_topic"] = _agreement(sids, topics)
    elif np.any(subtopics > 0):
        report["subtopic_note"] = (
            f"only {int((subtopics > 0).sum())} of {v} items carry "
            f"{ITEM_SUBTOPIC}: sub-topic agreement not computed")
    return report
