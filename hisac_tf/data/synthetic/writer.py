"""Writes the synthetic data set: shards, item table and summary.

`generate(cfg)` streams the users of `cfg.synthetic` one at a time (each has
its own seeded generators, so the output does not depend on the order or
the shard count) into `num_shards` shards per split, users dealt round
robin. Requests are split by time: the last `eval_fraction` of the span is
the eval (test) split, the `valid_fraction` before it the valid split
(written only when > 0), the rest train. `summary.json` gives per split the
counts, the Bayes-optimal AUC/GAUC/log loss from `true_ctr` and the
history-window oracle curve (`oracle.py`); memory holds one user plus
fixed-size accumulators.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

import numpy as np
import tensorflow as tf  # This module never touches tf.keras.

from hisac_tf import json_io, metrics
from hisac_tf.config import Config, ConfigError, write_resolved
from hisac_tf.data import filesystems
from hisac_tf.data.feature_spec import (FeatureSpec, feature_values,
                                        item_example)
from hisac_tf.data.feature_stats import DenseStatistics, write_feature_stats
from hisac_tf.data.shard_writer import shard_name
from hisac_tf.data.synthetic.oracle import (ALL, OracleCurve, oracle_windows,
                                            window_ctrs)
from hisac_tf.data.synthetic.requests import (TARGET_CTR, calibrate_bias,
                                              request_dicts, side_world_for,
                                              sigmoid, simulate_user)
from hisac_tf.data.synthetic.side_features import (CONTEXT_SIDE_FEATURES,
                                                   ITEM_SIDE_FEATURES,
                                                   SideWorld, context,
                                                   uses_side_world)
from hisac_tf.data.synthetic.users import history_cap
from hisac_tf.data.synthetic.world import (DAY_S, ITEM_CHUNK, PARAMS,
                                           START_TIME, World, build_world,
                                           item_embeddings)

SUPPORTED_USER_FEATURES = ("gender", "age_bucket")
SUMMARY_FILE = "summary.json"


class _SplitStats:
    """Fixed-size accumulators of one split (train, valid or eval)."""

    def __init__(self, max_len: int, windows: list[int]):
        self.requests = 0
        self.impressions = 0
        self.clicks = 0
        self.ctr_sum = 0.0
        self.log_loss_sum = 0.0
        self.auc = metrics.HistogramAUC()
        self.auc_no_side = metrics.HistogramAUC()
        self.with_side = False
        self.gauc = metrics.GroupedAUC()
        self.history_counts = np.zeros(max_len + 1, np.int64)
        self.oracle = OracleCurve(windows)

    def add_request(self, labels, ctr, history_length: int,
                    ctr_no_side=None) -> None:
        self.requests += 1
        self.impressions += labels.size
        self.clicks += int(labels.sum())
        self.ctr_sum += float(ctr.astype(np.float64).sum())
        p = np.clip(ctr.astype(np.float64), 1e-7, 1 - 1e-7)
        self.log_loss_sum -= float(
            np.sum(np.where(labels == 1, np.log(p), np.log1p(-p))))
        self.auc.update(labels, ctr)
        if ctr_no_side is not None:
            self.with_side = True
            self.auc_no_side.update(labels, ctr_no_side)
        self.history_counts[history_length] += 1

    def summary(self, max_history: int) -> dict:
        try:
            bayes_auc = self.auc.result()
        except ValueError:  # One class only (or no impressions).
            bayes_auc = None
        gauc = self.gauc.result()
        n = max(self.impressions, 1)
        out = {
            "requests": self.requests,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "ctr": self.clicks / n,
            "mean_true_ctr": self.ctr_sum / n,
            "bayes_auc": bayes_auc,
            "bayes_gauc": None if math.isnan(gauc) else gauc,
            "gauc_users": self.gauc.num_used_users,
            "bayes_log_loss": self.log_loss_sum / n,
            "history_window_oracle": self.oracle.result(),
        }
        if self.with_side:
            try:
                # The true model with the side-feature terms removed
                # (side_features.py): what the side features are worth.
                out["bayes_auc_without_side_features"] = (
                    self.auc_no_side.result())
            except ValueError:
                pass
        out.update(_length_stats(self.history_counts, max_history))
        return out


def _length_stats(counts: np.ndarray, max_history: int) -> dict:
    """Mean/median/max of history lengths from their count array."""
    total = int(counts.sum())
    if total == 0:
        return {"history_mean": None, "history_median": None,
                "history_max": None, "histories_over_max_history": 0}
    lengths = np.arange(counts.size)
    cum = np.cumsum(counts)
    lower = int(np.searchsorted(cum, (total + 1) // 2))
    upper = int(np.searchsorted(cum, total // 2 + 1))
    return {
        "history_mean": float((lengths * counts).sum() / total),
        "history_median": 0.5 * (lower + upper),
        "history_max": int(lengths[counts > 0].max()),
        "histories_over_max_history": int(counts[max_history + 1:].sum()),
    }


class _Progress:
    """Line-based progress on stderr every ~5% of the users."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.every = max(1, min(1000, math.ceil(total / 20)))
        self.start = time.time()
        self.done = 0

    def step(self, requests: int) -> None:
        self.done += 1
        if self.enabled and (self.done % self.every == 0
                             or self.done == self.total):
            elapsed = max(time.time() - self.start, 1e-9)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate
            print(
                f"synthetic: {self.done}/{self.total} users "
                f"({100 * self.done / self.total:.0f}%), {rate:.0f} users/s, "
                f"{requests} requests, eta {eta:.0f}s",
                file=sys.stderr, flush=True,
            )


def check_config(cfg: Config) -> None:
    """Raises ConfigError for a setting the generator cannot honour."""
    syn, data = cfg.synthetic, cfg.data
    if syn.candidates_per_request > data.max_candidates:
        raise ConfigError(
            f"synthetic.candidates_per_request ({syn.candidates_per_request})"
            f" must be <= data.max_candidates ({data.max_candidates})"
        )
    if syn.candidates_per_request > syn.num_items:
        raise ConfigError(
            f"synthetic.candidates_per_request ({syn.candidates_per_request})"
            f" must be <= synthetic.num_items ({syn.num_items})"
        )
    unknown = [f for f in data.user_features
               if f not in SUPPORTED_USER_FEATURES]
    if unknown:
        raise ConfigError(
            f"data.user_features holds {unknown[0]!r}, which the synthetic "
            f"generator does not make (it makes {SUPPORTED_USER_FEATURES})"
        )
    split_patterns = [data.train_pattern, data.eval_pattern]
    if syn.valid_fraction:
        split_patterns.append(data.valid_pattern)
    if len(set(split_patterns)) < len(split_patterns):
        raise ConfigError(
            "data.train_pattern, data.eval_pattern and (with "
            "synthetic.valid_fraction > 0) data.valid_pattern must differ, "
            f"got {split_patterns!r}"
        )
    _check_features(cfg)
    if syn.dominant_interests + syn.longtail_interests < 1:
        raise ConfigError(
            "synthetic.dominant_interests + synthetic.longtail_interests "
            f"must be >= 1, got {syn.dominant_interests} + "
            f"{syn.longtail_interests}"
        )


def _remove_stale(directory: str, pattern: str, keep: list[str],
                  progress: bool) -> None:
    """Deletes files of `pattern` in `directory` that this run won't write."""
    for path in tf.io.gfile.glob(os.path.join(directory, pattern)):
        if path not in keep:
            if progress:
                print(f"synthetic: removing stale {path}", file=sys.stderr)
            tf.io.gfile.remove(path)


def _write_items(world: World, cfg: Config, path: str,
                 side: SideWorld | None = None) -> None:
    """The item table: id, category, content embedding (plus the style
    of the content preference), sub-topic id and the declared item side
    features under their record keys."""
    options = tf.io.TFRecordOptions(compression_type=cfg.data.compression)
    syn = cfg.synthetic
    declared = [f for f in cfg.all_features if f.location == "item"
                and f.name != "content"]
    styled = side is not None and bool(syn.content_weight
                                       or syn.content_engagements)
    with tf.io.TFRecordWriter(path, options) as writer:
        for first in range(1, world.num_items + 1, ITEM_CHUNK):
            stop = min(first + ITEM_CHUNK, world.num_items + 1)
            emb = item_embeddings(world, cfg.synthetic, first, stop)
            if styled:
                emb = emb + side.content_offset(np.arange(first, stop))
            for k, item in enumerate(range(first, stop)):
                feats = {f.record_key: feature_values(
                    f, _item_value(side, f, item)) for f in declared}
                writer.write(item_example(
                    item, int(world.item_category[item]), emb[k],
                    int(world.item_subtopic[item]) + 1, features=feats,
                ).SerializeToString())


def _write_stats(cfg: Config, side: SideWorld | None, out_dir: str) -> None:
    """feature_stats.json of the declared dense features: the synthetic
    ones are item features, whose statistics are over the item table."""
    dense = [f for f in cfg.all_features if f.kind == "dense"]
    if not dense:
        return
    stats = {f.name: DenseStatistics().add(side.price[1:]) for f in dense}
    write_feature_stats(out_dir, stats, split="train")


def _item_value(side: SideWorld, f, item: int):
    if f.name == "brand":
        return (side.brand_name(item) if f.dtype == "string"
                else int(side.brand[item]) + 1)
    if f.name == "price":
        return float(side.price[item])
    return [int(t) for t in side.tags[item] if t]  # tags


def _check_features(cfg: Config) -> None:
    """The declared features the generator can write, or ConfigError."""
    want = {
        "brand": ("item", ("categorical",), None),
        "price": ("item", ("dense",), None),
        "tags": ("item", ("multi_categorical",), "int64"),
        "content": ("item", ("vector",), None),
        "hour": ("context", ("categorical",), "int64"),
        "device": ("context", ("categorical",), "string"),
    }
    for f in cfg.features:
        if f.name not in want:
            raise ConfigError(
                f"features[{f.name!r}]: the synthetic generator makes "
                f"only {', '.join(ITEM_SIDE_FEATURES + CONTEXT_SIDE_FEATURES)}"
                " (and data.user_features)")
        location, kinds, dtype = want[f.name]
        if f.location != location or f.kind not in kinds or (
                dtype and f.dtype != dtype):
            raise ConfigError(
                f"features[{f.name!r}] must be a {location} "
                f"{'/'.join(kinds)}{' ' + dtype if dtype else ''} feature "
                "for the synthetic generator, got "
                f"{f.location} {f.kind} {f.dtype}")
        if f.name == "content" and (f.dim != cfg.synthetic.content_dim
                                    or f.record_key != "content_embedding"):
            raise ConfigError(
                "features['content'] is the item table's content_embedding:"
                f" key 'content_embedding', dim {cfg.synthetic.content_dim} "
                f"(synthetic.content_dim), got key {f.record_key!r}, dim "
                f"{f.dim}")


def _jsonable(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def split_times(cfg: Config) -> tuple[int, int]:
    """(valid start, eval start): requests at or after each go there."""
    syn = cfg.synthetic
    eval_start = START_TIME + int(
        round((1.0 - syn.eval_fraction) * syn.span_days * DAY_S))
    valid_start = START_TIME + int(round(
        (1.0 - syn.eval_fraction - syn.valid_fraction) * syn.span_days
        * DAY_S))
    return valid_start, eval_start


def generate(cfg: Config, output_dir: str | None = None,
             progress: bool = True) -> dict:
    """Writes the synthetic data set of `cfg` and returns its summary.

    Args:
      cfg: the resolved config; `cfg.synthetic` shapes the world, `cfg.data`
        gives N, C, the user features, file patterns and compression.
      output_dir: where to write; default `cfg.data.data_dir`.
      progress: print a progress line on stderr every ~5% of the users.
    Returns:
      the summary also written to `<output_dir>/summary.json`.
    Raises:
      ConfigError (a ValueError): a setting the generator cannot honour,
        e.g. synthetic.candidates_per_request > data.max_candidates.
    """
    check_config(cfg)
    syn, data = cfg.synthetic, cfg.data
    out_dir = filesystems.ensure_filesystem(output_dir or data.data_dir)
    start = time.time()
    spec = FeatureSpec(
        max_history=data.max_history,
        max_candidates=data.max_candidates,
        with_true_ctr=True,
        features=cfg.all_features,
        record_keys=tuple(data.record_keys),
    )
    context_names = [f.name for f in spec.request_features
                     if f.location == "context"]
    num_shards = syn.num_shards
    patterns = {"train": data.train_pattern, "valid": data.valid_pattern,
                "eval": data.eval_pattern, "items": data.item_table_pattern}
    splits = ["train", "valid", "eval"] if syn.valid_fraction else [
        "train", "eval"]
    files = {
        split: [
            os.path.join(out_dir, shard_name(patterns[split], k, num_shards))
            for k in range(num_shards)
        ]
        for split in splits
    }
    files["items"] = [
        os.path.join(out_dir, shard_name(data.item_table_pattern, 0, 1))
    ]
    world = build_world(syn)
    side = (side_world_for(world, syn) if uses_side_world(
        syn, bool(cfg.features)) else None)
    tf.io.gfile.makedirs(out_dir)
    for split, pattern in patterns.items():
        _remove_stale(out_dir, pattern, files.get(split, []), progress)
    write_resolved(cfg, out_dir)
    _write_items(world, cfg, files["items"][0], side)
    _write_stats(cfg, side, out_dir)
    bias = calibrate_bias(world, cfg)
    cap = history_cap(cfg)
    windows = oracle_windows(cfg)
    valid_time, split_time = split_times(cfg)
    stats = {split: _SplitStats(cap, windows) for split in splits}
    behaviours_sum, behaviours_max = 0, 0
    options = tf.io.TFRecordOptions(compression_type=data.compression)
    bar = _Progress(syn.num_users, progress)
    for shard in range(num_shards):
        writers = {split: tf.io.TFRecordWriter(files[split][shard], options)
                   for split in splits}
        try:
            for user_id in range(shard + 1, syn.num_users + 1, num_shards):
                sample = simulate_user(world, cfg, user_id)
                behaviours_sum += sample.hist_item_ids.size
                behaviours_max = max(behaviours_max,
                                     sample.hist_item_ids.size)
                oracle = window_ctrs(world, syn, sample, bias, windows)
                no_side = (sigmoid(sample.logits - sample.side_logits + bias)
                           if side is not None else None)  # [R, C]
                ctx = (context(syn, user_id, sample.request_time)
                       if context_names else {})
                per_split = {split: ([], [], []) for split in splits}
                for r, (record, labels, ctr) in enumerate(
                        request_dicts(sample, bias)):
                    t = record["request_time"]
                    for name in context_names:
                        record[name] = ctx[name][r]
                    split = ("eval" if t >= split_time else
                             "valid" if t >= valid_time and syn.valid_fraction
                             else "train")
                    writers[split].write(
                        spec.to_example(record).SerializeToString())
                    stats[split].add_request(
                        labels, ctr, record["hist_item_ids"].size,
                        None if no_side is None else no_side[r])
                    per_split[split][0].append(labels)
                    per_split[split][1].append(ctr)
                    per_split[split][2].append(r)
                for split, (labels, ctr, rows) in per_split.items():
                    if labels:
                        y = np.concatenate(labels)
                        stats[split].gauc.add_user(y, np.concatenate(ctr))
                        stats[split].oracle.add_user(
                            y, {w: c[rows].ravel() for w, c in oracle.items()})
                bar.step(sum(s.requests for s in stats.values()))
        finally:
            for writer in writers.values():
                writer.close()
    all_counts = sum(s.history_counts for s in stats.values())
    summary = {
        "output_dir": out_dir,
        "seconds": time.time() - start,
        "users": syn.num_users,
        "items": syn.num_items,
        "topics": syn.num_topics,
        "subtopics": world.num_subtopics,
        "categories": syn.num_topics,
        "max_history": data.max_history,
        "history_cap": cap,
        "behaviours_per_user_mean": behaviours_sum / syn.num_users,
        "behaviours_per_user_max": behaviours_max,
        "requests": sum(s.requests for s in stats.values()),
        "impressions": sum(s.impressions for s in stats.values()),
        "eval_split_time": split_time,
        "calibrated_bias": bias,
        "target_ctr": TARGET_CTR,
        "oracle_windows": [*windows, ALL],
        **_length_stats(all_counts, data.max_history),
        **{split: stats[split].summary(data.max_history)
           for split in splits},
        "files": {k: [os.path.basename(p) for p in v]
                  for k, v in files.items()},
        "world_params": dataclasses.asdict(PARAMS),
        "config": cfg.to_dict(),
    }
    if syn.valid_fraction:
        summary["valid_split_time"] = valid_time
    summary = _jsonable(summary)
    json_io.write_json(os.path.join(out_dir, SUMMARY_FILE), summary)
    return summary
