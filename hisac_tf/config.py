"""Typed, frozen configuration for every hisac_tf job.

One `Config` holds six sections (`data`, `synthetic`, `tokenizer`, `model`,
`training`, `export`). Named presets live as JSON files under `configs/`
(`tiny`, `demo`, `taobao_mm`, `industrial`); a preset may name a `base`
preset it extends. Overrides are dotted `key=value` strings, e.g.
`model.num_agents=100`. Unknown keys and values of the wrong type are errors
that name the key and the value. Layers never see this module: config stops
at `build_model(cfg, feature_spec)` and the job entry points.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Any, Mapping, Sequence

CONFIG_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"
)


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


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
    batch_size: int = 32
    shuffle_buffer: int = 1000
    deterministic: bool = False
    num_parallel_reads: int = 4

    def validate(self) -> None:
        _positive(self, "max_history", "max_candidates", "batch_size")
        _non_negative(self, "shuffle_buffer")
        _positive(self, "num_parallel_reads")
        if self.compression not in ("", "GZIP", "ZLIB"):
            raise ConfigError(
                f"data.compression must be '', 'GZIP' or 'ZLIB', got "
                f"{self.compression!r}"
            )


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic world of DESIGN §5 (only read by the generator)."""

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

    def validate(self) -> None:
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
        if self.zipf_exponent <= 0:
            raise ConfigError(
                "synthetic.zipf_exponent must be > 0, got "
                f"{self.zipf_exponent!r}"
            )


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """RQ-VAE item tokenizer (DESIGN §2.1)."""

    output_dir: str = "runs/tokenizer"
    codebook_sizes: tuple[int, ...] = (16, 8)
    latent_dim: int = 16
    hidden_dims: tuple[int, ...] = (64,)
    beta: float = 0.25
    batch_size: int = 256
    epochs: int = 20
    learning_rate: float = 1e-3
    dead_code_threshold: int = 1
    seed: int = 0

    def validate(self) -> None:
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


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The HiSAC ranker and its compressor (DESIGN §2.2-2.5, §3)."""

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
    # The target attention's log-partition as a feature (how much of the
    # history matches a candidate; AgentTargetAttention, docs/results.md).
    attention_mass: bool = True
    # S of the short-term branch: exact target attention over the newest S
    # behaviours beside the long-term compressor (docs/design.md §2.6);
    # 0 turns the branch off.
    short_term_length: int = 0
    # Baseline compressors' own settings (DESIGN §3).
    kmeans_iterations: int = 5  # Lloyd steps of `kmeans`
    lsh_bits: int = 0  # SimHash bits of `lsh`; 0: ceil(log2 A) + 1

    def validate(self) -> None:
        _non_negative(self, "kmeans_iterations", "lsh_bits",
                      "short_term_length")
        if self.lsh_bits and (
            self.lsh_bits > 16 or 2 ** self.lsh_bits < self.num_agents
        ):
            raise ConfigError(
                f"model.lsh_bits must be 0 (automatic) or satisfy "
                f"num_agents ({self.num_agents}) <= 2^lsh_bits and "
                f"lsh_bits <= 16, got {self.lsh_bits!r}"
            )
        _positive(
            self, "embedding_dim", "item_vocab_buckets",
            "category_vocab_buckets", "user_vocab_buckets", "num_agents",
            "num_heads", "time_gap_buckets",
        )
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


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The train/evaluate jobs."""

    model_dir: str = "runs/model"
    mode: str = "train_and_eval"
    train_steps: int = 200
    eval_steps: int = 0
    checkpoint_every: int = 100
    dense_learning_rate: float = 1e-3
    embedding_learning_rate: float = 1e-3
    strategy: str = "default"
    seed: int = 0
    log_every: int = 20
    # Evaluate on the valid split (data.valid_pattern) every this many
    # steps, keeping the best checkpoint by valid AUC under
    # <model_dir>/best; 0 turns it off.
    valid_every: int = 0
    # The checkpoint `evaluate` scores: "best" (by valid AUC), "latest", or
    # "auto" (the best when one exists, else the latest).
    evaluate_checkpoint: str = "auto"

    def validate(self) -> None:
        _non_negative(self, "valid_every")
        if self.evaluate_checkpoint not in ("auto", "best", "latest"):
            raise ConfigError(
                "training.evaluate_checkpoint must be 'auto', 'best' or "
                f"'latest', got {self.evaluate_checkpoint!r}"
            )
        if self.mode not in ("train", "eval", "train_and_eval"):
            raise ConfigError(
                "training.mode must be 'train', 'eval' or "
                f"'train_and_eval', got {self.mode!r}"
            )
        if self.strategy not in ("default", "mirrored", "multi_worker"):
            raise ConfigError(
                "training.strategy must be one of default, mirrored, "
                f"multi_worker; got {self.strategy!r}"
            )
        _positive(self, "train_steps", "checkpoint_every", "log_every")
        _non_negative(self, "eval_steps")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The SavedModel export job."""

    export_dir: str = "runs/export"
    version: int = 0
    model_name: str = "hisac"
    grpc_port: int = 8500

    def validate(self) -> None:
        _non_negative(self, "version")


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a run."""

    name: str = "default"
    data: DataConfig = DataConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    export: ExportConfig = ExportConfig()

    def validate(self) -> "Config":
        for section in _SECTIONS:
            getattr(self, section).validate()
        if len(self.model.top_k) != len(self.tokenizer.codebook_sizes):
            raise ConfigError(
                f"model.top_k has {len(self.model.top_k)} levels but "
                "tokenizer.codebook_sizes has "
                f"{len(self.tokenizer.codebook_sizes)}: one k per level"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **sections: Any) -> "Config":
        """Returns a copy with whole sections or section fields replaced.

        `cfg.replace(model={"num_agents": 8})` changes one field.
        """
        return from_dict(_merge(self.to_dict(), sections))


_SECTIONS = ("data", "synthetic", "tokenizer", "model", "training", "export")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 1:
            raise ConfigError(
                f"{_section_name(obj)}.{name} must be >= 1, got {value!r}"
            )


def _non_negative(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 0:
            raise ConfigError(
                f"{_section_name(obj)}.{name} must be >= 0, got {value!r}"
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
    "export": ExportConfig,
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


def _build_section(name: str, values: Mapping[str, Any]) -> Any:
    cls = _SECTION_TYPES[name]
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key {name}.{unknown[0]} (known keys of "
            f"'{name}': {', '.join(sorted(known))})"
        )
    kwargs = {
        key: _coerce(f"{name}.{key}", hints[key], value)
        for key, value in values.items()
    }
    return cls(**kwargs)


def from_dict(values: Mapping[str, Any]) -> Config:
    """Builds and validates a `Config`; unknown keys are errors."""
    unknown = sorted(set(values) - set(_SECTIONS) - {"name", "base"})
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]!r} (known: name, base, "
            f"{', '.join(_SECTIONS)})"
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
    return Config(name=name, **sections).validate()


def preset_names() -> list[str]:
    return sorted(
        f[: -len(".json")] for f in os.listdir(CONFIG_DIR)
        if f.endswith(".json")
    )


def _load_raw(name_or_path: str, seen: tuple[str, ...] = ()) -> dict:
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
    with open(path) as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path} is not valid JSON: {e}")
    base = raw.pop("base", None)
    if base is not None:
        raw = _merge(_load_raw(base, seen + (path,)), raw)
    return raw


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
    """Writes the resolved config as `config.json` inside `directory`."""
    import tensorflow as tf  # Local import: config must not need TF.

    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, "config.json")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(cfg.to_json() + "\n")
    return path
