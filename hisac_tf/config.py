"""Typed, frozen configuration for every hisac_tf job.

One `Config` holds nine sections (`data`, `synthetic`, `tokenizer`,
`model`, `training`, `evaluation`, `cluster`, `export`, `importer`) and the
declared `features` list. Named presets live as JSON files under `configs/`
(`preset_names()` lists them: `tiny`, `demo`, `taobao_mm`, `taobao_mm_hour`,
`longrange`, `longrange_10k`, `industrial`, `features`, `features_no_side`,
`features_content`, `features_content_no_content`); a preset may name a
`base` preset it extends. Overrides are dotted `key=value` strings, e.g.
`model.num_agents=100`. Unknown keys and values of the wrong type are errors
that name the key and the value (a key that moved to another section names
its new place, `MOVED_KEYS`). Layers never see this module: config stops at
`build_model(cfg, feature_spec, tables, item_features)` and the job entry
points.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
import os
import types
import typing
from typing import Any, Mapping, Sequence

from hisac_tf.behaviors import BEHAVIOR_IDS, behavior_id
from hisac_tf.buckets import MIN_BUCKETS
from hisac_tf.feature_config import (
    FeatureConfig,
    FeatureConfigError,
    check_features,
    default_features,
    features_from_list,
)

# model.feature_combiner values (hisac_tf.models.feature_embeddings).
FEATURE_COMBINERS = ("sum", "concat")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT_ROOT = os.path.dirname(_PACKAGE_DIR)


def find_config_dir() -> str:
    """The directory of the preset JSON files (`configs/` of the project).

    In a source checkout (setup.py beside the package) it is the checkout's
    own `configs/`, so edits take effect without reinstalling and the code
    never reads another copy's presets. An installed package (`pip install
    .`, a wheel) carries them as package data, `hisac_tf/presets/`, found
    through importlib.resources.
    """
    checkout = os.path.join(_CHECKOUT_ROOT, "configs")
    if os.path.isfile(os.path.join(_CHECKOUT_ROOT, "setup.py")) and \
            os.path.isdir(checkout):
        return checkout
    return str(importlib.resources.files("hisac_tf") / "presets")


CONFIG_DIR = find_config_dir()


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


# The request splits, each read from data.<split>_pattern.
DATA_SPLITS = ("train", "valid", "eval")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the request-level TFRecords live and how they are read."""

    data_dir: str = "runs/data"
    train_pattern: str = "train-*.tfrecord.gz"
    eval_pattern: str = "eval-*.tfrecord.gz"  # the held-out test split
    # The validation split (model selection), between train and eval in time.
    valid_pattern: str = "valid-*.tfrecord.gz"
    item_table_pattern: str = "items-*.tfrecord.gz"
    compression: str = "GZIP"
    max_history: int = 200
    max_candidates: int = 20
    user_features: tuple[str, ...] = ("gender", "age_bucket")
    # Record keys of the core request fields where a log's own TFRecords
    # name them differently: "field=key" each, e.g. "hist_item_ids=clicks"
    # (declared features name theirs in `features[...].key`).
    record_keys: tuple[str, ...] = ()
    batch_size: int = 32
    shuffle_buffer: int = 1000
    deterministic: bool = False
    num_parallel_reads: int = 4
    # Splits ("train", "valid", "eval") whose shards may hold no records
    # (an importer with more shards than requests writes some); elsewhere
    # a record-less shard is an error naming it (split_files.check_shards).
    allow_empty_shards: tuple[str, ...] = ()

    def validate(self) -> None:
        _positive(self, "max_history", "max_candidates", "batch_size")
        if not set(self.allow_empty_shards) <= set(DATA_SPLITS):
            raise ConfigError(
                "data.allow_empty_shards must hold splits out of "
                f"{list(DATA_SPLITS)}, got {list(self.allow_empty_shards)!r}"
            )
        _non_negative(self, "shuffle_buffer")
        _positive(self, "num_parallel_reads")
        _non_empty(self, "data_dir", "train_pattern", "eval_pattern",
                   "valid_pattern", "item_table_pattern")
        _names(self, "user_features")
        record_key_map(self)
        if self.compression not in ("", "GZIP", "ZLIB"):
            raise ConfigError(
                f"data.compression must be '', 'GZIP' or 'ZLIB', got "
                f"{self.compression!r}"
            )


CORE_RECORD_FIELDS = (
    "user_id", "request_time", "hist_item_ids", "hist_category_ids",
    "hist_behaviors", "hist_timestamps", "cand_item_ids",
    "cand_category_ids", "labels", "true_ctr",
)


def record_key_map(data: "DataConfig") -> dict[str, str]:
    """`data.record_keys` as {core field: record key}; errors name the
    entry."""
    out: dict[str, str] = {}
    for entry in data.record_keys:
        field, sep, key = entry.partition("=")
        field, key = field.strip(), key.strip()
        if not sep or not field or not key:
            raise ConfigError(
                f"data.record_keys entries must look like field=key, got "
                f"{entry!r}")
        if field not in CORE_RECORD_FIELDS:
            raise ConfigError(
                f"data.record_keys: {field!r} is not a core request field "
                f"(known: {', '.join(CORE_RECORD_FIELDS)}); declared "
                "features name their key in features[...].key")
        if field in out:
            raise ConfigError(
                f"data.record_keys names {field!r} twice: {entry!r}")
        out[field] = key
    if len(set(out.values())) != len(out):
        raise ConfigError(
            f"data.record_keys maps two fields to one key: "
            f"{list(data.record_keys)!r}")
    return out


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic world of docs/design.md §5 (only read by the generator)."""

    seed: int = 0
    num_users: int = 200
    num_items: int = 2000
    num_topics: int = 8
    subtopics_per_topic: int = 4
    content_dim: int = 16
    content_noise: float = 0.3
    zipf_exponent: float = 1.1
    min_history: int = 5
    mean_history: int = 60
    requests_per_user: int = 3
    candidates_per_request: int = 10
    dominant_interests: int = 3
    longtail_interests: int = 12
    eval_fraction: float = 0.2
    num_shards: int = 2
    span_days: int = 30
    # The validation split: requests in this share of the span just before
    # the eval share go to `data.valid_pattern` shards (0: none written).
    valid_fraction: float = 0.0
    # Click model (docs/design.md §5); the defaults are the original model.
    affinity_weight: float = 2.5  # current interest weights w_s(t)
    longtail_weight: float = 1.5  # saturating 1 - 2^-n_s, non-dominant s
    recency_weight: float = 1.0  # exp(-time since the last s / recency)
    recency_days: float = 2.0
    popularity_weight: float = 0.3
    # Long-range structure (docs/design.md §5); zero or off by default.
    count_weight: float = 0.0  # non-saturating log1p(n_s), whole history
    count_reference: int = 0  # > 0: n_s as a rate scaled to this length
    recent_share_weight: float = 0.0  # s's share of the newest behaviours
    recent_half_life: float = 20.0  # ... decayed by 2^-(age / half-life)
    periodic_interests: int = 0  # dormant interests active in bursts
    periodic_period_days: float = 30.0  # median cycle (lognormal)
    periodic_period_sigma: float = 0.5
    periodic_burst_days: float = 2.0  # how long a burst lasts
    periodic_burst_share: float = 0.5  # behaviours of a burst it takes
    comeback_request_share: float = 0.0  # requests as a burst begins
    lifetime_candidate_share: float = 0.0  # candidates by lifetime counts
    history_lead_spans: float = 1.0  # behaviour log before the span
    # Side features (hisac_tf/data/synthetic/side_features.py); 0: off.
    brand_weight: float = 0.0  # segment x brand affinity
    price_weight: float = 0.0  # segment price sensitivity x log price
    hour_weight: float = 0.0  # hour of day x category peak hour
    content_weight: float = 0.0  # <p_u, style_j>, a content preference
    content_engagements: float = 0.0  # matching events per 50 of the log

    def validate(self) -> None:
        _non_negative(self, "seed")
        _positive(
            self, "num_users", "num_items", "num_topics",
            "subtopics_per_topic", "content_dim", "min_history",
            "mean_history", "requests_per_user", "candidates_per_request",
            "num_shards", "span_days",
        )
        _non_negative(self, "content_noise", "dominant_interests",
                      "longtail_interests")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(
                "synthetic.eval_fraction must be in (0, 1), got "
                f"{self.eval_fraction!r}"
            )
        if not 0.0 <= self.valid_fraction < 1.0 - self.eval_fraction:
            raise ConfigError(
                "synthetic.valid_fraction must be in [0, 1 - "
                f"synthetic.eval_fraction = {1.0 - self.eval_fraction!r}), "
                f"got {self.valid_fraction!r}"
            )
        _non_negative(
            self, "affinity_weight", "longtail_weight", "recency_weight",
            "popularity_weight", "count_weight", "recent_share_weight",
            "periodic_interests", "periodic_period_sigma", "count_reference",
            "history_lead_spans", "brand_weight", "price_weight",
            "hour_weight", "content_weight", "content_engagements",
        )
        if self.content_engagements > 50:
            raise ConfigError(
                "synthetic.content_engagements (per 50 events) must be <= "
                f"50, got {self.content_engagements!r}")
        for name in ("recency_days", "recent_half_life",
                     "periodic_period_days", "periodic_burst_days"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"synthetic.{name} must be > 0, got "
                    f"{getattr(self, name)!r}"
                )
        for name in ("periodic_burst_share", "comeback_request_share",
                     "lifetime_candidate_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(
                    f"synthetic.{name} must be in [0, 1], got "
                    f"{getattr(self, name)!r}"
                )
        if self.zipf_exponent <= 0:
            raise ConfigError(
                "synthetic.zipf_exponent must be > 0, got "
                f"{self.zipf_exponent!r}"
            )


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """RQ-VAE item tokenizer (docs/design.md §2.1)."""

    output_dir: str = "runs/tokenizer"
    codebook_sizes: tuple[int, ...] = (16, 8)
    latent_dim: int = 16
    hidden_dims: tuple[int, ...] = (64,)
    # 1.0, not the paper's 0.25: with latent_norm "rms" it keeps the
    # quantisation error a small, steady share of ||z||^2 (demo item table,
    # 15 epochs: 7 % of ||z||^2 against 20 % at 0.25, same reconstruction).
    beta: float = 1.0
    batch_size: int = 256
    epochs: int = 20
    learning_rate: float = 1e-3
    dead_code_threshold: int = 1
    seed: int = 0
    # Latent geometry (docs/design.md §2.1): normalisation of z ("none",
    # "rms", "layer") and the codebook update ("gradient", "ema").
    latent_norm: str = "rms"
    codebook_update: str = "gradient"
    ema_decay: float = 0.99
    # Items of the seeded sample the codebooks train on at scale (0: the
    # whole table); `hisac-assign-sids --sample_only` writes it and Beam
    # assigns every item (docs/data_at_scale.md).
    train_sample_items: int = 0

    def validate(self) -> None:
        _non_negative(self, "train_sample_items")
        for name, allowed in (("latent_norm", ("none", "rms", "layer")),
                              ("codebook_update", ("gradient", "ema"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"tokenizer.{name} must be one of {list(allowed)}, got "
                    f"{getattr(self, name)!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(
                f"tokenizer.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not self.codebook_sizes or any(
            k < 1 for k in self.codebook_sizes
        ):
            raise ConfigError(
                "tokenizer.codebook_sizes must be a non-empty list of "
                f"positive sizes, got {list(self.codebook_sizes)!r}"
            )
        _positive(self, "latent_dim", "batch_size", "epochs")
        if self.beta < 0:
            raise ConfigError(f"tokenizer.beta must be >= 0, got {self.beta}")
        _greater_than_zero(self, "learning_rate")
        _dims(self, "hidden_dims")
        _non_negative(self, "dead_code_threshold", "seed")
        _non_empty(self, "output_dir")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The HiSAC ranker and its compressor (docs/design.md §2.2-2.5, §3)."""

    compressor: str = "hisac"
    embedding_dim: int = 16
    item_vocab_buckets: int = 100_000
    category_vocab_buckets: int = 1_000
    user_vocab_buckets: int = 100_000
    num_agents: int = 32
    top_k: tuple[int, ...] = (8, 4)
    vote_temperature: float = 1.0
    routing_temperature: float = 1.0
    num_heads: int = 2
    time_gap_buckets: int = 16
    mlp_dims: tuple[int, ...] = (64, 32)
    use_cross_layer: bool = True
    dropout: float = 0.0
    # The target attention's log-partition relative to the prior's
    # (logsumexp_a logits - logsumexp_a log w_a) as a feature (how much of the
    # history matches a candidate; AgentTargetAttention,
    # docs/results/taobao_mm_hour/report.md).
    attention_mass: bool = True
    # S of the short-term branch: exact target attention over the newest S
    # behaviours beside the long-term compressor (docs/design.md §2.6);
    # 0 turns the branch off.
    short_term_length: int = 50
    # M of the match counts (HistoryMatchCounts): per candidate, how many
    # behaviours share its category and each SID prefix (the keys
    # with the M most behaviours are kept per type); 0 turns them off.
    count_slots: int = 256
    # How item and event features join h_i and the candidate embedding
    # (hisac_tf.models.feature_embeddings): "sum" adds each feature's
    # D-wide embedding, "concat" concatenates them and projects to D.
    feature_combiner: str = "sum"
    # Baseline compressors' own settings (docs/design.md §3).
    kmeans_iterations: int = 5  # Lloyd steps of `kmeans`
    lsh_bits: int = 0  # SimHash bits of `lsh`; 0: ceil(log2 A) + 1
    # m of sparse routing (SoftRoutingAttention(top_m)): each agent reads
    # only its m nearest history items, A m D aggregation instead of
    # A N D; 0 (or m >= N) is the paper's dense routing. `hisac` and
    # `hisac_no_voting` only.
    routing_top_m: int = 0

    def validate(self) -> None:
        _non_negative(self, "kmeans_iterations", "lsh_bits",
                      "short_term_length", "count_slots", "routing_top_m")
        if self.routing_top_m and self.compressor not in (
                "hisac", "hisac_no_voting"):
            raise ConfigError(
                "model.routing_top_m (sparse soft routing) applies to "
                "model.compressor 'hisac' or 'hisac_no_voting'; got "
                f"routing_top_m={self.routing_top_m} with compressor "
                f"{self.compressor!r}"
            )
        if self.compressor == "none" and not self.short_term_length:
            raise ConfigError(
                "model.compressor 'none' (no long-term branch) needs "
                "model.short_term_length > 0, got 0"
            )
        if self.lsh_bits and (
            self.lsh_bits > 16 or 2 ** self.lsh_bits < self.num_agents
        ):
            raise ConfigError(
                f"model.lsh_bits must be 0 (automatic) or satisfy "
                f"num_agents ({self.num_agents}) <= 2^lsh_bits and "
                f"lsh_bits <= 16, got {self.lsh_bits!r}"
            )
        _positive(self, "embedding_dim", "num_agents", "num_heads")
        _buckets(self, "item_vocab_buckets", "category_vocab_buckets",
                 "user_vocab_buckets", "time_gap_buckets")
        if not self.top_k or any(k < 1 for k in self.top_k):
            raise ConfigError(
                "model.top_k must hold one positive k per level, got "
                f"{list(self.top_k)!r}"
            )
        for name in ("vote_temperature", "routing_temperature"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"model.{name} must be > 0, got {getattr(self, name)!r}"
                )
        if self.embedding_dim % self.num_heads:
            raise ConfigError(
                f"model.embedding_dim ({self.embedding_dim}) must be "
                f"divisible by model.num_heads ({self.num_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"model.dropout must be in [0, 1), got {self.dropout!r}"
            )
        _dims(self, "mlp_dims")
        _non_empty(self, "compressor")
        if self.feature_combiner not in FEATURE_COMBINERS:
            raise ConfigError(
                f"model.feature_combiner must be one of "
                f"{list(FEATURE_COMBINERS)}, got {self.feature_combiner!r}")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The train job: steps, optimisers, checkpoints, model selection."""

    model_dir: str = "runs/model"
    mode: str = "train_and_eval"
    train_steps: int = 200
    checkpoint_every: int = 100
    dense_learning_rate: float = 1e-3
    embedding_learning_rate: float = 1e-3
    seed: int = 0
    log_every: int = 20
    # The divergence guard (hisac_tf/training/divergence.py): the run
    # stops when its loss exceeds this multiple of its early value (the
    # smallest loss of the first divergence_warmup_steps steps) or the
    # valid predictions collapse to one value; 0 turns it off.
    divergence_factor: float = 10.0
    divergence_warmup_steps: int = 5
    # Evaluate on the valid split (data.valid_pattern) every this many
    # steps, keeping the best checkpoint by valid AUC under
    # <model_dir>/best; 0 turns it off.
    valid_every: int = 0
    # HiSAC's routing (voting, prototypes, routing weights) as a tf.data
    # map of the training input pipeline, so that the training step only
    # aggregates u = alpha h (hisac_tf/models/routing_plan.py); needs a
    # hisac compressor and the default strategy.
    routing_in_input_pipeline: bool = False

    def validate(self) -> None:
        _non_negative(self, "valid_every")
        if self.mode not in ("train", "eval", "train_and_eval"):
            raise ConfigError(
                "training.mode must be 'train', 'eval' or "
                f"'train_and_eval', got {self.mode!r}"
            )
        _positive(self, "train_steps", "checkpoint_every", "log_every")
        _greater_than_zero(self, "dense_learning_rate",
                           "embedding_learning_rate")
        if self.divergence_factor and not self.divergence_factor > 1:
            raise ConfigError(
                "training.divergence_factor must be 0 (off) or > 1, got "
                f"{self.divergence_factor!r}")
        _positive(self, "divergence_warmup_steps")
        _non_empty(self, "model_dir")


# The checkpoints `select_checkpoint` can choose (hisac_tf/training/
# checkpoints.py): "best" by valid AUC, "latest", or "auto" (the best when
# one exists, else the latest).
CHECKPOINT_CHOICES = ("auto", "best", "latest")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """The evaluate job: the checkpoint it scores and its slices."""

    # The checkpoint `evaluate` scores, and export publishes
    # (CHECKPOINT_CHOICES).
    checkpoint: str = "auto"
    # Sliced evaluation (hisac_tf/evaluation/slices.py): upper edges of the
    # history-length buckets (behaviours before the request), of the user
    # activity buckets (behaviours in the last `activity_days` days), the
    # smallest slice that gets numbers, and the reliability bins.
    history_buckets: tuple[int, ...] = (50, 200, 1000, 3000)
    activity_buckets: tuple[int, ...] = (5, 20, 50)
    activity_days: float = 7.0
    min_slice_impressions: int = 100
    calibration_bins: int = 10

    def validate(self) -> None:
        if self.checkpoint not in CHECKPOINT_CHOICES:
            raise ConfigError(
                "evaluation.checkpoint must be 'auto', 'best' or "
                f"'latest', got {self.checkpoint!r}"
            )
        for name in ("history_buckets", "activity_buckets"):
            edges = getattr(self, name)
            if not edges or min(edges) < 1 or \
                    list(edges) != sorted(set(edges)):
                raise ConfigError(
                    f"evaluation.{name} must be strictly increasing edges "
                    f">= 1, got {list(edges)!r}"
                )
        _greater_than_zero(self, "activity_days")
        _positive(self, "min_slice_impressions", "calibration_bins")


# `cluster.strategy` names (aliases: STRATEGY_ALIASES); hisac_tf/distribute/
# strategy.py builds them.
STRATEGIES = ("default", "mirrored", "multi_worker_mirrored",
              "parameter_server")
STRATEGY_ALIASES = {"multi_worker": "multi_worker_mirrored"}


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """Distributed training (docs/distributed.md).

    The `tf.distribute` strategy; under parameter_server the
    embedding-table shards (0: one per PS task) and the smallest shard in
    bytes (smaller tables get fewer shards); how long to wait for every
    task of TF_CONFIG before failing with the missing ones.
    """

    strategy: str = "default"
    ps_shards: int = 0
    ps_min_shard_bytes: int = 1 << 20
    timeout_s: float = 120.0

    def validate(self) -> None:
        if self.strategy not in STRATEGIES + tuple(STRATEGY_ALIASES):
            raise ConfigError(
                "cluster.strategy must be one of default, mirrored, "
                "multi_worker_mirrored (alias multi_worker), "
                f"parameter_server; got {self.strategy!r}"
            )
        _non_negative(self, "ps_shards")
        _positive(self, "ps_min_shard_bytes", "timeout_s")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The SavedModel export job."""

    export_dir: str = "runs/export"
    version: int = 0
    model_name: str = "hisac"
    grpc_port: int = 8500
    # Serving limits (serving/request_limits.py): checked on each request's
    # declared shapes before any tensor is materialised.
    max_history_multiple: int = 4  # history width <= this x exported N
    max_candidates: int = 1024  # C per request
    max_requests: int = 1024  # R per call
    max_request_mb: int = 64  # materialised inputs per call, MiB
    max_concurrent_rpcs: int = 32  # admitted calls; more: RESOURCE_EXHAUSTED
    # Work budgets per call: R x C candidates scored, R x N' history items
    # received; 0: max_requests x the served version's exported C (or N).
    max_scored_candidates: int = 0
    max_history_items: int = 0

    def validate(self) -> None:
        _non_negative(self, "version", "max_scored_candidates",
                      "max_history_items")
        _non_empty(self, "export_dir")
        _port(self, "grpc_port")
        _safe_name(self, "model_name")
        _positive(self, "max_history_multiple", "max_candidates",
                  "max_requests", "max_request_mb", "max_concurrent_rpcs")


@dataclasses.dataclass(frozen=True)
class ImporterConfig:
    """The raw-log importer, `hisac-import` (docs/design.md §4).

    N, C, the user features, the file patterns, the compression and the
    output directory are `data`'s (`data.max_history` and so on): the
    records are written for the FeatureSpec that training reads them with.
    The contract of every field is in `hisac_tf.data.importers.log_importer`.
    """

    input: str = ""  # comma-separated paths or glob patterns; required
    format: str = "auto"
    items: str = ""
    users: str = ""
    header: str = "auto"
    delimiter: str = ","
    request_window_s: int = 3600
    positive_behaviors: tuple[str, ...] = ("cart", "fav", "buy")
    negatives_per_request: int = 4
    # Never sample a negative the user interacted with before the request
    # (an exact-match attention would learn that history items are label 0).
    exclude_history_from_negatives: bool = True
    # Time split: eval (the held-out test split) is the newest eval_days
    # days, valid the valid_days days just before it (0: no valid split).
    eval_days: int = 1
    eval_start_ts: int | None = None  # overrides eval_days
    valid_days: int = 0
    valid_start_ts: int | None = None  # overrides valid_days
    # The log's timestamp unit: "auto" (by the median's magnitude), "s",
    # "ms", "us" or "ns"; timestamps are converted to seconds, then events
    # outside [min_timestamp, max_timestamp] (seconds; default up to
    # 2100-01-01) are dropped and counted (log_reader).
    timestamp_unit: str = "auto"
    min_timestamp: int = 0
    max_timestamp: int = 4_102_444_800
    # Exact duplicate events are counted; dropped (first kept) when set.
    drop_duplicates: bool = False
    # Write a split holding one label only (no positive or no negative)
    # instead of stopping with an error.
    allow_single_class_split: bool = False
    min_history: int = 0
    skip_bad_rows: bool = False
    num_shards: int = 1
    seed: int = 0
    progress_every: int = 1_000_000
    overwrite: bool = False
    # The closing warnings: a share of events, candidates or histories lost
    # above warn_share, a split with fewer than warn_min_requests requests.
    warn_share: float = 0.05
    warn_min_requests: int = 100
    # ... or with fewer than warn_min_impressions impressions (candidates).
    warn_min_impressions: int = 500

    def validate(self) -> None:
        def bad(name: str, what: str) -> None:
            raise ConfigError(
                f"importer.{name} {what}, got {getattr(self, name)!r}"
            )

        if self.format not in ("auto", "csv", "parquet"):
            bad("format", "must be 'auto', 'csv' or 'parquet'")
        if self.header not in ("auto", "yes", "no"):
            bad("header", "must be 'auto', 'yes' or 'no'")
        if len(self.delimiter) != 1:
            bad("delimiter", "must be one character")
        for name in ("request_window_s", "num_shards", "progress_every"):
            if getattr(self, name) < 1:
                bad(name, "must be an integer >= 1")
        for name in ("negatives_per_request", "eval_days", "valid_days",
                     "min_history", "warn_min_requests"):
            if getattr(self, name) < 0:
                bad(name, "must be an integer >= 0")
        for name in ("eval_start_ts", "valid_start_ts"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                bad(name, "must be a timestamp >= 0 or null")
        if (self.valid_start_ts is not None
                and self.eval_start_ts is not None
                and self.valid_start_ts > self.eval_start_ts):
            bad("valid_start_ts",
                f"must be <= importer.eval_start_ts ({self.eval_start_ts})")
        if not 0.0 <= self.warn_share <= 1.0:
            bad("warn_share", "must be in [0, 1]")
        if self.timestamp_unit not in ("auto", "s", "ms", "us", "ns"):
            bad("timestamp_unit", "must be 'auto', 's', 'ms', 'us' or 'ns'")
        if self.min_timestamp < 0:
            bad("min_timestamp", "must be a timestamp >= 0")
        if self.max_timestamp <= self.min_timestamp:
            bad("max_timestamp",
                f"must be > importer.min_timestamp ({self.min_timestamp})")
        if self.warn_min_impressions < 0:
            bad("warn_min_impressions", "must be an integer >= 0")
        if not self.positive_behaviors:
            bad("positive_behaviors", "must name at least one behaviour")
        for b in self.positive_behaviors:
            if behavior_id(b) is None:
                bad("positive_behaviors",
                    f"must hold behaviours out of {sorted(BEHAVIOR_IDS)} "
                    f"or 1..4 (bad: {b!r})")

    @property
    def positive_ids(self) -> frozenset[int]:
        """The behaviour ids (1..4) that make a candidate's label 1."""
        return frozenset(behavior_id(b) for b in self.positive_behaviors)


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a run."""

    name: str = "default"
    data: DataConfig = DataConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    cluster: ClusterConfig = ClusterConfig()
    export: ExportConfig = ExportConfig()
    importer: ImporterConfig = ImporterConfig()
    # Declared features (hisac_tf.feature_config, docs/design.md §4.1)
    # beside the core fields; data.user_features are declared for you.
    features: tuple[FeatureConfig, ...] = ()

    @property
    def all_features(self) -> tuple[FeatureConfig, ...]:
        """data.user_features as default features, then `features`."""
        try:
            return check_features(
                default_features(self.data.user_features) + self.features,
                default_dim=self.model.embedding_dim)
        except FeatureConfigError as e:
            raise ConfigError(str(e)) from None

    def validate(self) -> "Config":
        for section in _SECTIONS:
            _finite(getattr(self, section))
            getattr(self, section).validate()
        self.all_features  # noqa: B018  (validates the declared features)
        if len(self.model.top_k) != len(self.tokenizer.codebook_sizes):
            raise ConfigError(
                f"model.top_k has {len(self.model.top_k)} levels but "
                "tokenizer.codebook_sizes has "
                f"{len(self.tokenizer.codebook_sizes)}: one k per level"
            )
        for level, (k, size) in enumerate(zip(
                self.model.top_k, self.tokenizer.codebook_sizes)):
            if k > size:
                raise ConfigError(
                    f"model.top_k[{level}] = {k} must be <= "
                    f"tokenizer.codebook_sizes[{level}] = {size} (the "
                    f"codes of level {level + 1}); got top_k "
                    f"{list(self.model.top_k)} with codebook_sizes "
                    f"{list(self.tokenizer.codebook_sizes)}"
                )
        if self.training.routing_in_input_pipeline and (
                not self.model.compressor.startswith("hisac")
                or self.cluster.strategy != "default"):
            raise ConfigError(
                "training.routing_in_input_pipeline needs a hisac "
                "compressor and cluster.strategy 'default'; got "
                f"model.compressor {self.model.compressor!r}, "
                f"cluster.strategy {self.cluster.strategy!r}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True,
                          allow_nan=False)

    def replace(self, **sections: Any) -> "Config":
        """Returns a copy with whole sections or section fields replaced.

        `cfg.replace(model={"num_agents": 8})` changes one field.
        """
        return from_dict(_merge(self.to_dict(), sections))


_SECTIONS = ("data", "synthetic", "tokenizer", "model", "training",
             "evaluation", "cluster", "export", "importer")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 1:
            raise ConfigError(
                f"{_section_name(obj)}.{name} must be >= 1, got {value!r}"
            )


def _buckets(obj: Any, *names: str) -> None:
    """Rows of a hashed embedding table: the layers' MIN_BUCKETS rule."""
    for name in names:
        value = getattr(obj, name)
        if value < MIN_BUCKETS:
            raise ConfigError(
                f"{_section_name(obj)}.{name} must be >= {MIN_BUCKETS} "
                f"(row 0 is padding), got {value!r}"
            )


def _non_negative(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 0:
            raise ConfigError(
                f"{_section_name(obj)}.{name} must be >= 0, got {value!r}"
            )


def _finite(obj: Any) -> None:
    """Every float field of a section is finite (NaN, inf are errors)."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{_section_name(obj)}.{field.name} must be a finite "
                f"number, got {value!r}"
            )


def _greater_than_zero(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(
                f"{_section_name(obj)}.{name} must be > 0, got {value!r}"
            )


def _dims(obj: Any, name: str) -> None:
    """A list of layer widths: each an integer >= 1 (may be empty)."""
    values = getattr(obj, name)
    bad = [v for v in values if v < 1]
    if bad:
        raise ConfigError(
            f"{_section_name(obj)}.{name} must hold widths >= 1, got "
            f"{list(values)!r} (bad: {bad[0]!r})"
        )


def _non_empty(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value.strip():
            raise ConfigError(
                f"{_section_name(obj)}.{name} must not be empty, got "
                f"{value!r}"
            )


def _names(obj: Any, name: str) -> None:
    """Distinct, non-empty names."""
    values = list(getattr(obj, name))
    for value in values:
        if not value.strip() or value != value.strip():
            raise ConfigError(
                f"{_section_name(obj)}.{name} must hold non-empty names "
                f"without surrounding spaces, got {values!r} (bad: "
                f"{value!r})"
            )
    if len(set(values)) != len(values):
        raise ConfigError(
            f"{_section_name(obj)}.{name} has duplicates: {values!r}"
        )


def _port(obj: Any, name: str) -> None:
    value = getattr(obj, name)
    if not 1 <= value <= 65535:
        raise ConfigError(
            f"{_section_name(obj)}.{name} must be a TCP port in 1..65535, "
            f"got {value!r}"
        )


# The characters of a name that becomes one path component (a model name,
# an experiment run's name).
NAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _safe_name(obj: Any, name: str) -> None:
    """A name that is one path component: [A-Za-z0-9_.-]+, not . or .."""
    value = getattr(obj, name)
    if (not value or not set(value) <= NAME_CHARS
            or value in (".", "..")):
        raise ConfigError(
            f"{_section_name(obj)}.{name} must match [A-Za-z0-9_.-]+ and "
            f"not be '.' or '..' (it names a directory), got {value!r}"
        )


def _section_name(obj: Any) -> str:
    for section in _SECTIONS:
        if type(obj) is _SECTION_TYPES[section]:
            return section
    return type(obj).__name__


_SECTION_TYPES = {
    "data": DataConfig,
    "synthetic": SyntheticConfig,
    "tokenizer": TokenizerConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "evaluation": EvaluationConfig,
    "cluster": ClusterConfig,
    "export": ExportConfig,
    "importer": ImporterConfig,
}


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(path: str, annotation: Any, value: Any) -> Any:
    """Checks `value` against a field's type, converting JSON lists."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)  # Optional[X]: null or an X.
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(path, inner, value)
    if origin is tuple:
        (item_type, _) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                f"{path} must be a list of {item_type.__name__}, got "
                f"{value!r}"
            )
        return tuple(
            _coerce(f"{path}[{i}]", item_type, v) for i, v in enumerate(value)
        )
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {annotation!r}")


# Keys that moved to another section (or went): their unknown-key error
# says where.
MOVED_KEYS = {
    "training.evaluate_checkpoint": "moved to evaluation.checkpoint",
    "training.eval_history_buckets": "moved to evaluation.history_buckets",
    "training.eval_activity_buckets": "moved to evaluation.activity_buckets",
    "training.eval_activity_days": "moved to evaluation.activity_days",
    "training.eval_min_slice_impressions":
        "moved to evaluation.min_slice_impressions",
    "training.eval_calibration_bins": "moved to evaluation.calibration_bins",
    "training.eval_steps": "removed: it was never read",
    "training.strategy": "moved to cluster.strategy",
    "training.ps_shards": "moved to cluster.ps_shards",
    "training.ps_min_shard_bytes": "moved to cluster.ps_min_shard_bytes",
    "training.cluster_timeout_s": "moved to cluster.timeout_s",
}


def _build_section(name: str, values: Mapping[str, Any]) -> Any:
    cls = _SECTION_TYPES[name]
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        moved = MOVED_KEYS.get(f"{name}.{unknown[0]}")
        raise ConfigError(
            f"unknown config key {name}.{unknown[0]} "
            + (f"({moved})" if moved else
               f"(known keys of '{name}': {', '.join(sorted(known))})")
        )
    kwargs = {
        key: _coerce(f"{name}.{key}", hints[key], value)
        for key, value in values.items()
    }
    return cls(**kwargs)


def from_dict(values: Mapping[str, Any]) -> Config:
    """Builds and validates a `Config`; unknown keys are errors."""
    unknown = sorted(
        set(values) - set(_SECTIONS) - {"name", "base", "features"})
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]!r} (known: name, base, "
            f"{', '.join(_SECTIONS)}, features)"
        )
    sections = {}
    for section in _SECTIONS:
        raw = values.get(section, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"config section {section!r} must be a mapping, got {raw!r}"
            )
        sections[section] = _build_section(section, raw)
    name = values.get("name", "default")
    if not isinstance(name, str):
        raise ConfigError(f"name must be a string, got {name!r}")
    try:
        features = features_from_list(values.get("features", []))
    except FeatureConfigError as e:
        raise ConfigError(str(e)) from None
    return Config(name=name, features=features, **sections).validate()


def preset_names() -> list[str]:
    if not os.path.isdir(CONFIG_DIR):
        raise ConfigError(
            f"no preset directory at {CONFIG_DIR} (neither a checkout's "
            "configs/ nor the installed hisac_tf/presets/): reinstall "
            "hisac_tf or pass a JSON path"
        )
    return sorted(
        f[: -len(".json")] for f in os.listdir(CONFIG_DIR)
        if f.endswith(".json")
    )


def _load_raw(name_or_path: str, seen: tuple[str, ...] = ()) -> dict:
    """The JSON object of a preset or file, its `base` chain merged in.

    Raises:
      ConfigError: naming the file and what is wrong with it (missing, a
        directory, not UTF-8, not JSON, not a JSON object, a bad `base`),
        and for a `base`, the file that names it.
    """
    try:
        return _load_one(name_or_path, seen)
    except ConfigError as e:
        if not seen:
            raise
        raise ConfigError(f"{e} (base of {seen[-1]})") from None


def _load_one(name_or_path: str, seen: tuple[str, ...]) -> dict:
    if not isinstance(name_or_path, str) or not name_or_path:
        where = f"config file {seen[-1]}: field base" if seen else "--config"
        raise ConfigError(
            f"{where} must name a preset or a JSON file, got "
            f"{name_or_path!r}")
    if os.path.sep in name_or_path or name_or_path.endswith(".json"):
        path = name_or_path
    else:
        path = os.path.join(CONFIG_DIR, f"{name_or_path}.json")
        if not os.path.exists(path):
            raise ConfigError(
                f"unknown config preset {name_or_path!r} (presets: "
                f"{', '.join(preset_names())})"
            )
    if path in seen:
        raise ConfigError(f"config presets form a cycle: {seen + (path,)}")
    raw = _read_json_object(path)
    base = raw.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ConfigError(
                f"config file {path}: field base must name a preset or a "
                f"JSON file, got {base!r}")
        raw = _merge(_load_raw(base, seen + (path,)), raw)
    return raw


def _read_json_object(path: str) -> dict:
    """The top-level JSON object of `path`; ConfigError naming it."""
    if os.path.isdir(path):
        raise ConfigError(
            f"config file {path} is a directory, not a JSON file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(
            f"config file {path} cannot be read: {e.strerror or e}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte "
            f"0x{data[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        kind = {list: "a list", str: "a string", bool: "a boolean",
                type(None): "null"}.get(type(raw), "a number")
        raise ConfigError(
            f"config file {path} must hold a JSON object {{section: "
            f"{{key: value}}}}, got {kind}: {_shorten(raw)}")
    return raw


def _shorten(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses `section.key=value`; the value is JSON, else a plain string."""
    if "=" not in text:
        raise ConfigError(
            f"override {text!r} must look like section.key=value"
        )
    key, raw_value = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"override key {key!r} must look like section.key "
            "(e.g. model.num_agents)"
        )
    try:
        value = json.loads(raw_value)
    except json.JSONDecodeError:
        value = raw_value
    return parts, value


def load_config(
    preset: str = "tiny", overrides: Sequence[str] = ()
) -> Config:
    """Loads a preset (name or JSON path) and applies `section.key=value`."""
    raw = _load_raw(preset)
    raw.setdefault("name", os.path.splitext(os.path.basename(preset))[0])
    for text in overrides:
        (section, key), value = parse_override(text)
        if section not in _SECTIONS:
            raise ConfigError(
                f"unknown config section {section!r} in override {text!r} "
                f"(known: {', '.join(_SECTIONS)})"
            )
        raw.setdefault(section, {})[key] = value
    return from_dict(raw)


def write_resolved(cfg: Config, directory: str) -> str:
    """Writes the resolved config as `config.json` inside `directory`.

    The config is validated first (one built in code may not have been),
    so a NaN or out-of-range field is a ConfigError naming it.
    """
    import tensorflow as tf  # Local import: config must not need TF.

    cfg.validate()
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, "config.json")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(cfg.to_json() + "\n")
    return path
