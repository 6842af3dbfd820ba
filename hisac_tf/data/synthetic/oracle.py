"""The history-window oracle: how much click signal lies beyond W behaviours.

For a request, the oracle scores each candidate with the true click model
(`requests.click_logits`) whose history terms (n_s, Δt_s, the recent
share) are re-computed from only the newest W behaviours before the
request. It knows what is not history: the world's items (sub-topic,
quality, popularity) and the user's bias. The latent terms (current
interest weights and which interests are dominant) are not in any history;
the oracle estimates them from the window (a sub-topic's share of the W
behaviours over the largest share, the top `dominant_interests` counts).
So with `affinity_weight` = `longtail_weight` = 0 the oracle over the whole
history is the true model and its AUC is the Bayes-optimal AUC; otherwise
it is a plug-in estimate below it.

The windows (docs/design.md §5): S (`model.short_term_length`, 50 when 0),
100, 200, 500, 1,000 and N (`data.max_history`), those above N dropped,
and "all" (the whole history, which may be longer than N).
"""

from __future__ import annotations

import numpy as np

from hisac_tf import metrics
from hisac_tf.config import Config, SyntheticConfig
from hisac_tf.data.synthetic.requests import (UserSample, click_logits,
                                              history_features,
                                              share_half_life, sigmoid,
                                              true_ctr)
from hisac_tf.data.synthetic.requests import side_world_for
from hisac_tf.data.synthetic.side_features import (preference_estimates,
                                                   side_logits,
                                                   uses_side_world)
from hisac_tf.data.synthetic.world import World

DEFAULT_SHORT_TERM = 50
FIXED_WINDOWS = (100, 200, 500, 1000)
ALL = "all"


def oracle_windows(cfg: Config) -> list[int]:
    """The finite windows W of the curve, ascending (see module doc)."""
    short = cfg.model.short_term_length or DEFAULT_SHORT_TERM
    n = cfg.data.max_history
    return sorted({w for w in (short, *FIXED_WINDOWS, n) if w <= n})


def _latent_estimates(world: World, syn: SyntheticConfig,
                      sample: UserSample, window: int | None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Window estimates of affinity [R, C] and dominance [R, C]."""
    num_s = world.num_subtopics
    hist_sub = world.item_subtopic[sample.hist_item_ids]  # [L]
    cand_sub = world.item_subtopic[sample.cand_item_ids]  # [R, C]
    affinity = np.zeros(cand_sub.shape)
    dominant = np.zeros(cand_sub.shape, bool)
    nd = min(syn.dominant_interests, num_s)
    for r, end in enumerate(sample.hist_end):
        lo = 0 if window is None else max(0, end - window)
        counts = np.bincount(hist_sub[lo:end], minlength=num_s)  # [S]
        affinity[r] = counts[cand_sub[r]] / max(counts.max(), 1)
        top = np.argsort(-counts, kind="stable")[:nd]
        is_dom = np.zeros(num_s, bool)
        is_dom[top[counts[top] > 0]] = True
        dominant[r] = is_dom[cand_sub[r]]
    return affinity, dominant


def window_logits(world: World, syn: SyntheticConfig, sample: UserSample,
                  window: int | None) -> np.ndarray:
    """Oracle logits [R, C] (no global bias) from the newest `window`
    behaviours before each request; None: the whole history."""
    feats = history_features(
        world, sample.hist_item_ids, sample.hist_timestamps,
        sample.request_time, sample.hist_end, sample.cand_item_ids, window,
        share_half_life(syn))
    if syn.affinity_weight or syn.longtail_weight:
        affinity, dominant = _latent_estimates(world, syn, sample, window)
    else:
        affinity = np.zeros(sample.cand_item_ids.shape)
        dominant = np.zeros(sample.cand_item_ids.shape, bool)
    logits = click_logits(world, syn, sample.cand_item_ids,
                          sample.user_bias, affinity, dominant, feats)
    if uses_side_world(syn, False):
        # Side terms read no history, except the content preference,
        # estimated from the window's content (side_features.py).
        side = side_world_for(world, syn)
        estimate = (preference_estimates(side, sample.hist_item_ids,
                                         sample.hist_end, window)
                    if syn.content_weight else None)
        logits = logits + side_logits(
            side, world, syn, sample.features, sample.user_id,
            sample.cand_item_ids, sample.request_time, estimate)
    return logits


def window_ctrs(world: World, syn: SyntheticConfig, sample: UserSample,
                bias: float, windows: list[int]) -> dict:
    """{window or ALL: oracle click probabilities [R, C] (float32)}, the
    same precision as the written `true_ctr`."""
    return {
        w: sigmoid(window_logits(world, syn, sample, None if w == ALL else w)
                   + bias).astype(np.float32)
        for w in [*windows, ALL]
    }


class OracleCurve:
    """Streaming oracle AUC and GAUC per window for one split."""

    def __init__(self, windows: list[int]):
        self.windows = [*windows, ALL]
        self.auc = {w: metrics.HistogramAUC() for w in self.windows}
        self.gauc = {w: metrics.GroupedAUC() for w in self.windows}

    def add_user(self, labels: np.ndarray, ctrs: dict) -> None:
        """One user's impressions of this split: labels [n] and
        {window: oracle ctr [n]}."""
        for w in self.windows:
            self.auc[w].update(labels, ctrs[w])
            self.gauc[w].add_user(labels, ctrs[w])

    def result(self) -> list[dict]:
        """[{"window": W or "all", "auc": ..., "gauc": ...}], None where
        undefined (one class only)."""
        rows = []
        for w in self.windows:
            try:
                auc = self.auc[w].result()
            except ValueError:
                auc = None
            gauc = self.gauc[w].result()
            rows.append({"window": w, "auc": auc,
                         "gauc": None if np.isnan(gauc) else gauc})
        return rows


def oracle_table(world: World, cfg: Config, samples, bias: float,
                 split_time: int, windows: list[int]) -> dict:
    """Exact oracle AUC/GAUC on the eval requests of `samples`.

    Args:
      samples: UserSamples (e.g. the first users of the data set).
      bias: the data set's calibrated bias; split_time: its eval split.
      windows: the finite windows; "all" and the Bayes row are added.
    Returns:
      {"rows": [{"window", "auc", "gauc"}...], "eval_requests",
       "impressions", "history_lengths" [requests]}.
    """
    syn = cfg.synthetic
    scores = {w: [] for w in [*windows, ALL]}
    bayes, labels, user_ids, lengths = [], [], [], []
    for sample in samples:
        keep = sample.request_time >= split_time  # eval requests only
        if not keep.any():
            continue
        ctr = true_ctr(sample, bias)  # [R, C], as written
        label = (sample.uniforms < ctr).astype(np.int64)
        for w, c in window_ctrs(world, syn, sample, bias, windows).items():
            scores[w].append(c[keep])
        bayes.append(ctr[keep])
        labels.append(label[keep])
        user_ids.append(np.full(label[keep].shape, sample.user_id))
        lengths.append(sample.hist_end[keep])
    if not labels:
        raise ValueError("no eval requests among the given users")
    y = np.concatenate(labels).ravel()
    uid = np.concatenate(user_ids).ravel()
    rows = []
    for w, parts in scores.items():
        s = np.concatenate(parts).ravel()
        rows.append({"window": w, "auc": metrics.auc(y, s),
                     "gauc": metrics.gauc(uid, y, s)})
    b = np.concatenate(bayes).ravel()
    rows.append({"window": "Bayes (true ctr)", "auc": metrics.auc(y, b),
                 "gauc": metrics.gauc(uid, y, b)})
    return {"rows": rows, "eval_requests": int(sum(x.size for x in lengths)),
            "impressions": int(y.size),
            "history_lengths": np.concatenate(lengths)}
