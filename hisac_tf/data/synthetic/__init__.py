"""Synthetic request-level data with a known optimum (docs/design.md §4, §5).

`generate(cfg)` builds a seeded world from `cfg.synthetic` and writes the
request-level TFRecord shards, the item table, `summary.json` and the
resolved `config.json` into `cfg.data.data_dir` (or `output_dir`).

* `world.py`: topics × sub-topics (uneven sizes), items with Zipf
  popularity, a small intrinsic quality and content embeddings that are a
  noisy, non-linear function of the sub-topic; `category_id` = topic + 1 is
  coarser than the sub-topic.
* `users.py`: demography, dominant and long-tail interests that drift, a
  heavy-tailed behaviour log (sessions over the span and a lead-in before
  it, capped at 1.5 × `data.max_history`), and optionally dormant periodic
  interests that come back in bursts.
* `requests.py`: request times, distinct candidates, the true click model
  (its formula is in that module's docstring) and Bernoulli labels; the
  records carry `true_ctr`, so the Bayes-optimal AUC is known.
* `oracle.py`: the history-window oracle curve, the true click model
  re-estimated from only the newest W behaviours.
* `side_features.py`: brand, price, tags, hour and device with their
  click-model terms (brand affinity, price sensitivity, hour of day), and
  the content-preference mode; written when declared in `features`.
* `writer.py`: shards (train / valid / eval by time), item table, summary.
* `raw_log.py`: the same world as a raw log (events.csv, items.csv,
  users.csv) for `hisac-import` (`hisac-generate --format=userbehavior`).

With the defaults the long-range terms are off and the data is the
original generator's, byte for byte.
"""

from hisac_tf.data.synthetic.oracle import (ALL, OracleCurve, oracle_table,
                                            oracle_windows, window_ctrs,
                                            window_logits)
from hisac_tf.data.synthetic.requests import (TARGET_CTR, HistoryFeatures,
                                              UserSample, calibrate_bias,
                                              click_logits, history_features,
                                              request_dicts, sigmoid,
                                              simulate_user, true_ctr)
from hisac_tf.data.synthetic.users import UserHistory, simulate_history
from hisac_tf.data.synthetic.world import (DAY_S, ITEM_CHUNK, PARAMS,
                                           START_TIME, World, WorldParams,
                                           build_world, item_embeddings)
from hisac_tf.data.synthetic.writer import (SUMMARY_FILE,
                                            SUPPORTED_USER_FEATURES,
                                            check_config, generate,
                                            shard_name, split_times)

__all__ = [
    "ALL", "DAY_S", "HistoryFeatures", "ITEM_CHUNK", "OracleCurve", "PARAMS",
    "START_TIME", "SUMMARY_FILE", "SUPPORTED_USER_FEATURES", "TARGET_CTR",
    "UserHistory", "UserSample", "World", "WorldParams", "build_world",
    "calibrate_bias", "check_config", "click_logits", "generate",
    "history_features", "item_embeddings", "oracle_table", "oracle_windows",
    "request_dicts", "shard_name", "sigmoid", "simulate_history",
    "simulate_user", "split_times", "true_ctr", "window_ctrs",
    "window_logits",
]
