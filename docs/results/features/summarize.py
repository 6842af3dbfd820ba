"""Issue 21 measurements: results.json and results.md from the runs.

Reads the experiment rows (`<model_dir>/experiment_row.json`), each
run's eval.json and predictions, and the data summaries of the
`features` and `features_content` presets; writes, next to this file,
results.json (every figure) and results.md (the tables of
docs/results.md, "Declared features").

    python docs/results/features/summarize.py \
        --features_models runs/features/model \
        --content_models runs/features_content/model

Per run: test AUC with its 95% bootstrap interval over users (500 draws,
`hisac_tf.training.bootstrap`), GAUC, the train step rate. Per seed
group: mean ± std (n − 1). Pairs: the paired bootstrap difference of
`hisac-evaluate --compare` (`eval_compare.compare`, 500 draws, seed 0).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

import numpy as np

from hisac_tf import json_io
from hisac_tf.training import bootstrap, eval_compare

HERE = os.path.dirname(os.path.abspath(__file__))
DRAWS = 500
SEED_SUFFIX = re.compile(r"-s(\d+)$")


def auc_interval(eval_path: str) -> tuple[float, float] | None:
    """95% percentile interval of the AUC over users (bootstrap)."""
    _, arrays = eval_compare.load_report(eval_path)
    _, users = np.unique(arrays["users"], return_inverse=True)
    counts = bootstrap.user_draws(int(users.max()) + 1, DRAWS,
                                  np.random.default_rng(0))
    draws = bootstrap.metric_draws("auc", users, arrays["labels"],
                                   arrays["probs"], counts)
    return bootstrap.interval(draws)


def read_runs(models: str) -> dict[str, dict]:
    """{run dir name: row} of the finished runs under `models`."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(models, "*",
                                              "experiment_row.json"))):
        directory = os.path.dirname(path)
        with open(path) as f:
            row = json.load(f)["row"]
        eval_path = os.path.join(directory, "eval.json")
        ci = auc_interval(eval_path)
        runs[os.path.basename(directory)] = {
            "name": row["name"], "group": row["group"],
            "compressor": row["compressor"], "n": row["n"],
            "short_term_length": row["short_term_length"],
            "seed": row["seed"], "config_name": row["config_name"],
            "overrides": row["overrides"], "auc": row["auc"],
            "auc_ci95": list(ci) if ci else None, "gauc": row["gauc"],
            "log_loss": row["log_loss"], "bayes_auc": row["bayes_auc"],
            "step": row["step"], "train_seconds": row["train_seconds"],
            "steps_per_second": row["step"] / max(row["train_seconds"],
                                                  1e-9),
            "parameters": row["parameters"], "eval_path": eval_path,
        }
    return runs


def seed_groups(runs: dict[str, dict]) -> dict[str, dict]:
    """{name without -s<seed>: mean ± std of AUC over its seeds}."""
    groups: dict[str, list] = {}
    for run in runs.values():
        base = SEED_SUFFIX.sub("", run["name"])
        groups.setdefault(base, []).append(run)
    out = {}
    for base, members in groups.items():
        aucs = np.array([m["auc"] for m in members])
        rates = np.array([m["steps_per_second"] for m in members])
        out[base] = {
            "seeds": sorted(m["seed"] for m in members),
            "auc_mean": float(aucs.mean()),
            "auc_std": float(aucs.std(ddof=1)) if aucs.size > 1 else None,
            "steps_per_second_median": float(np.median(rates)),
        }
    return out


def pair(runs: dict[str, dict], base: str, other: str) -> dict | None:
    """Paired bootstrap AUC difference other − base (all impressions)."""
    if base not in runs or other not in runs:
        return None
    result = eval_compare.compare(
        [runs[base]["eval_path"], runs[other]["eval_path"]],
        num_draws=DRAWS, seed=0, names=[base, other])
    row = next(r for r in result["rows"]
               if r["slice"] == "all" and r["metric"] == "auc")
    (diff,) = row["diffs"]
    return {"base": base, "other": other, "diff": diff["diff"],
            "ci95": [diff["low"], diff["high"]]}


def data_summary(models: str) -> dict:
    """The eval split's Bayes AUCs and window-oracle curve."""
    data = os.path.join(os.path.dirname(models), "data", "summary.json")
    with open(data) as f:
        split = json.load(f)["eval"]
    return {
        "bayes_auc": split["bayes_auc"],
        "bayes_auc_without_side_features": split.get(
            "bayes_auc_without_side_features"),
        "history_window_oracle": split["history_window_oracle"],
        "impressions": split["impressions"],
    }


def _fmt(value, digits: int = 4, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def run_table(runs: dict[str, dict]) -> list[str]:
    lines = ["| run | compressor | N | S | seed | test AUC [95% CI] | GAUC "
             "| steps/s |", "|---|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        ci = r["auc_ci95"] or [None, None]
        lines.append(
            f"| {key} | {r['compressor']} | {r['n']} | "
            f"{r['short_term_length']} | {r['seed']} | {_fmt(r['auc'])} "
            f"[{_fmt(ci[0])}, {_fmt(ci[1])}] | {_fmt(r['gauc'])} | "
            f"{r['steps_per_second']:.2f} |")
    return lines


def markdown(out: dict) -> str:
    lines = ["# Issue 21: declared features (generated by summarize.py)",
             ""]
    for name in ("features", "features_content"):
        part = out.get(name)
        if not part:
            continue
        d = part["data"]
        lines += [f"## {name}", "",
                  f"Bayes AUC (eval) {_fmt(d['bayes_auc'])}, without the "
                  "side-feature terms "
                  f"{_fmt(d['bayes_auc_without_side_features'])}.", "",
                  "| window | oracle AUC | oracle GAUC |", "|---|---|---|"]
        lines += [f"| {w['window']} | {_fmt(w['auc'])} | "
                  f"{_fmt(w['gauc'])} |" for w in d["history_window_oracle"]]
        lines += [""] + run_table(part["runs"]) + [""]
        lines += ["| seed group | seeds | AUC mean ± std | steps/s median |",
                  "|---|---|---|---|"]
        for base, g in part["seed_groups"].items():
            lines.append(f"| {base} | {g['seeds']} | {_fmt(g['auc_mean'])} "
                         f"± {_fmt(g['auc_std'])} | "
                         f"{g['steps_per_second_median']:.2f} |")
        lines += ["", "| other − base | Δ AUC [95% paired CI] |",
                  "|---|---|"]
        for p in part["pairs"]:
            lines.append(f"| {p['other']} − {p['base']} | "
                         f"{_fmt(p['diff'], sign=True)} "
                         f"[{_fmt(p['ci95'][0], sign=True)}, "
                         f"{_fmt(p['ci95'][1], sign=True)}] |")
        lines.append("")
    return "\n".join(lines)


def features_pairs(runs: dict) -> list[dict]:
    pairs = []
    for seed in range(3):
        side = f"hisac_side-s{seed}-N100"
        pairs.append(pair(runs, f"hisac_no_side-s{seed}-N100", side))
        pairs.append(pair(runs, f"short_only_side-s{seed}-N100", side))
    return [p for p in pairs if p]


def content_pairs(runs: dict) -> list[dict]:
    pairs = []
    names = sorted({SEED_SUFFIX.sub("", r["name"]).rsplit("_c", 1)[0]
                    for r in runs.values()})
    for name in names:  # content vector on − off, same model
        for suffix in ("", "-s1"):
            pairs.append(pair(runs, f"{name}_coff{suffix}-N200",
                              f"{name}_con{suffix}-N200"))
    for name in names:  # against short-only, content on
        if name != "short_only":
            pairs.append(pair(runs, "short_only_con-N200",
                              f"{name}_con-N200"))
    for name in names:  # against hisac two-branch, content on
        if name not in ("hisac", "short_only"):
            pairs.append(pair(runs, f"{name}_con-N200", "hisac_con-N200"))
    return [p for p in pairs if p]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features_models", default="runs/features/model")
    parser.add_argument("--content_models",
                        default="runs/features_content/model")
    args = parser.parse_args()
    out = {}
    for name, models, pairs in (
            ("features", args.features_models, features_pairs),
            ("features_content", args.content_models, content_pairs)):
        if not os.path.isdir(models):
            continue
        runs = read_runs(models)
        out[name] = {"data": data_summary(models), "runs": runs,
                     "seed_groups": seed_groups(runs),
                     "pairs": pairs(runs)}
    json_io.write_json(os.path.join(HERE, "results.json"), out)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
