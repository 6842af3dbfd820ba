"""How much of the synthetic click signal lies beyond the newest W behaviours?

An analysis of the generator (`hisac_tf/data/synthetic.py`), not of a model: it
explains the sequence-length scaling in docs/results.md. For the eval
requests of the first `--users` users of a preset, the true click logit
(docs/design.md §5) is re-estimated by a plug-in oracle that sees only the
newest W
behaviours before each request, but knows every item's true sub-topic,
quality and popularity:

    affinity  share of the candidate's sub-topic among the W behaviours,
              over the largest share (the true model: interest weights)
    long tail 1 - 2^-n with n the behaviours in the sub-topic among the W,
              for a sub-topic outside the window's top `dominant_interests`
    recency   exp(-time since the newest such behaviour / 2 days)

with the generator's weights; the user bias is unknown to it, so GAUC
(per-user AUC) is the figure to read, AUC is shown beside it. W runs over
`--windows` and "all" (the whole history before the request); the Bayes
row scores with the true click probability. The gap between W = 200 (what
`recent` keeps with A = 200) and "all" bounds what a longer history can
add on this data for an estimator of this form.

    python benchmarks/history_window_oracle.py --config=taobao_mm_hour \
        [--users=2000] [--windows=100,200,300,1000,3000]

Writes `benchmarks/results/history_window_oracle.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hisac_tf  # noqa: E402,F401  (Keras 2: before TensorFlow)

# isort: split
import numpy as np  # noqa: E402

from hisac_tf import metrics  # noqa: E402
from hisac_tf.config import load_config  # noqa: E402
from hisac_tf.data import synthetic  # noqa: E402

ALL = 0  # window size meaning "the whole history"


def plug_in_logits(world, sample, window: int, dominant: int,
                   params=synthetic.PARAMS) -> np.ndarray:
    """[R, C] oracle logits from the newest `window` behaviours (0: all)."""
    sub = world.item_subtopic[sample.hist_item_ids]  # [L]
    t = sample.hist_timestamps  # [L]
    num_s = world.num_subtopics
    cand_sub = world.item_subtopic[sample.cand_item_ids]  # [R, C]
    out = np.zeros(sample.cand_item_ids.shape)
    for r, end in enumerate(sample.hist_end):
        lo = 0 if window == ALL else max(0, end - window)
        counts = np.bincount(sub[lo:end], minlength=num_s)  # [S]
        last = np.full(num_s, -1)
        last[sub[lo:end]] = np.arange(lo, end)  # the newest index wins
        share = counts / max(counts.max(), 1)  # [S]
        top = np.argsort(-counts, kind="stable")[:dominant]
        is_dom = np.zeros(num_s, bool)
        is_dom[top[counts[top] > 0]] = True
        n = counts[cand_sub[r]]  # [C]
        gap = sample.request_time[r] - t[np.maximum(last[cand_sub[r]], 0)]
        recency = np.where(n > 0, np.exp(-gap / params.recency_s), 0.0)
        longtail = np.where((n > 0) & ~is_dom[cand_sub[r]],
                            1.0 - 0.5**n, 0.0)
        out[r] = (
            world.item_quality[sample.cand_item_ids[r]]
            + params.w_affinity * share[cand_sub[r]]
            + params.w_longtail * longtail
            + params.w_recency * recency
            + params.w_popularity * world.pop_z[sample.cand_item_ids[r]]
        )
    return out


def main(cfg, users: int, windows: list[int]) -> dict:
    """The table for the first `users` users of `cfg`'s data (a Config)."""
    began = time.time()
    world = synthetic.build_world(cfg.synthetic)
    summary_path = os.path.join(cfg.data.data_dir, synthetic.SUMMARY_FILE)
    with open(summary_path) as f:
        summary = json.load(f)
    bias, split = summary["calibrated_bias"], summary["eval_split_time"]
    scores = {w: [] for w in windows + [ALL]}
    bayes, labels, user_ids, lengths = [], [], [], []
    for user in range(1, users + 1):
        sample = synthetic.simulate_user(world, cfg, user)
        keep = sample.request_time >= split  # eval requests only
        if not keep.any():
            continue
        ctr = synthetic._sigmoid(sample.logits + bias)  # [R, C]
        label = (sample.uniforms < ctr).astype(np.int64)  # its labels
        for w in scores:
            scores[w].append(plug_in_logits(
                world, sample, w, cfg.synthetic.dominant_interests)[keep])
        bayes.append(ctr[keep])
        labels.append(label[keep])
        user_ids.append(np.full(label[keep].shape, user))
        lengths.append(sample.hist_end[keep])
    y = np.concatenate(labels).ravel()
    uid = np.concatenate(user_ids).ravel()
    rows = []
    for w, parts in scores.items():
        s = np.concatenate(parts).ravel()
        rows.append({"window": "all" if w == ALL else w,
                     "auc": metrics.auc(y, s), "gauc": metrics.gauc(uid, y, s)})
    b = np.concatenate(bayes).ravel()
    rows.append({"window": "Bayes (true ctr)", "auc": metrics.auc(y, b),
                 "gauc": metrics.gauc(uid, y, b)})
    hist = np.concatenate(lengths)
    return {
        "preset": cfg.name,
        "users": users,
        "eval_requests": int(hist.size),
        "impressions": int(y.size),
        "history_at_request": {
            "mean": float(hist.mean()), "median": float(np.median(hist)),
            "share_over_200": float((hist > 200).mean()),
            "share_over_1000": float((hist > 1000).mean()),
        },
        "rows": rows,
        "seconds": time.time() - began,
    }


def format_table(result: dict) -> str:
    lines = ["| newest W behaviours | oracle AUC | oracle GAUC |",
             "| --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['window']} | {r['auc']:.4f} | {r['gauc']:.4f} |")
    return "\n".join(lines)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="taobao_mm_hour")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--windows", default="100,200,300,1000,3000")
    parser.add_argument("--output", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results",
        "history_window_oracle.json"))
    args = parser.parse_args()
    try:
        windows = [int(w) for w in args.windows.split(",")]
    except ValueError:
        parser.error(f"--windows must be ints, got {args.windows!r}")
    if args.users < 1 or any(w < 1 for w in windows):
        parser.error(f"--users and --windows must be >= 1, got "
                     f"{args.users!r} and {windows!r}")
    result = main(load_config(args.config), args.users, windows)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(format_table(result))
    print(f"history at request: {result['history_at_request']}; "
          f"{result['eval_requests']} eval requests, "
          f"{result['seconds']:.0f} s -> {args.output}")


if __name__ == "__main__":
    run()
