"""The experiment report: results.json, results.md and the plots.

Per (run, N) the table has: name, compressor, N, S (short_term_length),
seed, G, test AUC, GAUC, log loss, the best valid AUC and its step (when
training wrote a learning curve), the Bayes-optimal AUC and the gap to it
(synthetic data), trainable parameters (all, and the compressor's own),
user-side, per-candidate and per-request multiply-adds
(`hisac_tf.compressors.flops`), the mean number of groups active per eval
request, and the routing diagnostics when the ranker reports them
(effective items per agent, mass outside the agent's SID, agents per
user; "–" otherwise).

Runs of one group that differ only by training.seed (a `seeds` entry, or
runs such as `hisac-s1`, `hisac-s2` with their own seeds) also get a
mean ± std row (std over seeds, n − 1) in a second table of the group.

Plots (written only when they have something to show): auc_vs_length.png
(runs with more than one N), auc_vs_flops.png (the first group),
ablations.png (AUC per run at the most frequent N),
learning_curves.png (valid AUC vs step of the runs with a curve) and
auc_by_history_length.png (AUC per history-length slice per run).

Each group also gets a table of AUC per history-length slice (the
evaluation's `history_length` slices, hisac_tf/evaluation/slices.py): the
question of *for whom* the long history pays.
"""

from __future__ import annotations

import collections
import json
import os
import re
from typing import Any, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf import json_io
from hisac_tf.config import Config
from hisac_tf.experiments.plan_schema import EXPERIMENT_GROUP, ExperimentPlan

try:  # Optional (the `plots` extra): without it no plot is written.
    from matplotlib.figure import Figure
except ImportError:  # pragma: no cover
    Figure = None

# Figures averaged over seeds in the mean ± std rows.
SEED_METRICS = ("auc", "gauc", "log_loss", "valid_auc", "bayes_auc")
_SEED_SUFFIX = re.compile(r"[-_.]?s(eed)?\d+$")


def results_dict(cfg: Config, plan: ExperimentPlan, jobs, generated,
                 rows: Sequence[dict], complete: bool) -> dict:
    """What results.json holds; `complete` is False while runs remain.

    "seconds" is the sum of the rows' own seconds: a resumed experiment
    counts the runs it reused at what they took.
    """
    results = {
        "config": cfg.to_dict(),
        "complete": complete,
        "compressors": list(dict.fromkeys(r.compressor for r in plan.runs)),
        "lengths": list(dict.fromkeys(n for _, n in jobs)),
        "runs": [r.to_dict() for r in plan.runs],
        "generated": sorted(generated),
        "rows": list(rows),
        "seed_aggregates": seed_aggregates(rows),
        "seconds": float(sum(r.get("seconds", 0.0) for r in rows)),
    }
    if plan.description:
        results["description"] = plan.description
    return results


# ------------------------------------------------------------ seeds
def _name(row: dict) -> str:
    return row.get("name", row["compressor"])


def _group(row: dict) -> str:
    return row.get("group", EXPERIMENT_GROUP)


def _seedless_key(row: dict) -> str:
    """What identifies a run apart from its seed and name."""
    overrides = {k: v for k, v in (row.get("overrides") or {}).items()
                 if k != "training.seed"}
    return json.dumps([
        _group(row), row["compressor"], row["n"],
        row.get("short_term_length"), row.get("tokenizer", "trained"),
        row.get("config_name"), overrides], sort_keys=True)


def _seed_name(rows: Sequence[dict]) -> str:
    owners = {r.get("seed_of") for r in rows}
    if len(owners) == 1 and "" not in owners and None not in owners:
        return owners.pop()
    stripped = {_SEED_SUFFIX.sub("", _name(r)) for r in rows}
    if len(stripped) == 1 and stripped != {""}:
        return stripped.pop()
    return "/".join(_name(r) for r in rows)


def seed_aggregates(rows: Sequence[dict]) -> list[dict]:
    """Mean ± std over seeds of the runs that differ only by seed.

    Rows of one group with the same compressor, N, S, tokenizer, preset
    and overrides (training.seed aside) and at least two distinct seeds
    form one aggregate: {"name", "group", "compressor", "n",
    "short_term_length", "seeds", "runs", and "<metric>_mean",
    "<metric>_std" (n − 1) for each of `SEED_METRICS` every row has}.
    """
    by_key: dict[str, list[dict]] = collections.defaultdict(list)
    for r in rows:
        if r.get("seed") is not None:
            by_key[_seedless_key(r)].append(r)
    out = []
    for mine in by_key.values():
        seeds = [r["seed"] for r in mine]
        if len(mine) < 2 or len(set(seeds)) != len(seeds):
            continue
        first = mine[0]
        agg = {
            "name": _seed_name(mine), "group": _group(first),
            "compressor": first["compressor"], "n": first["n"],
            "short_term_length": first.get("short_term_length"),
            "seeds": seeds, "runs": [_name(r) for r in mine],
        }
        for metric in SEED_METRICS:
            values = [r.get(metric) for r in mine]
            if any(v is None for v in values):
                continue
            agg[f"{metric}_mean"] = float(np.mean(values))
            agg[f"{metric}_std"] = float(np.std(values, ddof=1))
        out.append(agg)
    return out


# ------------------------------------------------------------ tables
def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _num(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _opt(row: dict, key: str, digits: int = 4) -> str:
    return _num(row.get(key), digits)


def _valid(row: dict) -> str:
    if row.get("valid_auc") is None:
        return "–"
    return f"{row['valid_auc']:.4f} @ {row['valid_auc_step']}"


def format_table(rows: Sequence[dict]) -> str:
    """The Markdown results table, one row per (run, N)."""
    head = (
        "| name | compressor | N | S | seed | G | AUC | GAUC | log loss | "
        "valid AUC (best @ step) | Bayes AUC | gap to Bayes AUC | "
        "params (compressor) | user MACs | MACs / candidate | "
        "MACs / request | groups active / user | items / agent | "
        "mass outside SID | agents / user |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {_name(r)} | {r['compressor']} | {r['n']} | "
            f"{r.get('short_term_length', '–')} | {r.get('seed', '–')} | "
            f"{r['groups']} | "
            f"{_num(r['auc'])} | {_num(r['gauc'])} | "
            f"{_num(r['log_loss'])} | {_valid(r)} | "
            f"{_num(r['bayes_auc'])} | {_num(r['gap_to_bayes_auc'])} | "
            f"{_si(r['parameters'])} ({_si(r['compressor_parameters'])}) | "
            f"{_si(r['user_flops'])} | {_si(r['per_candidate_flops'])} | "
            f"{_si(r['request_flops'])} | "
            f"{r['active_groups_mean']:.1f} | "
            f"{_opt(r, 'effective_items_per_agent', 1)} | "
            f"{_opt(r, 'off_sid_mass', 3)} | "
            f"{_opt(r, 'agents_per_user', 1)} |"
        )
    return "\n".join(lines)


def _pm(agg: dict, metric: str) -> str:
    if f"{metric}_mean" not in agg:
        return "–"
    return f"{agg[f'{metric}_mean']:.4f} ± {agg[f'{metric}_std']:.4f}"


def format_seed_table(aggregates: Sequence[dict]) -> str:
    """Mean ± std over seeds, one row per aggregate (`seed_aggregates`)."""
    head = ("| name | compressor | N | S | seeds | AUC | GAUC | log loss | "
            "valid AUC (best) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for a in aggregates:
        seeds = ", ".join(str(s) for s in a["seeds"])
        lines.append(
            f"| {a['name']} | {a['compressor']} | {a['n']} | "
            f"{a.get('short_term_length', '–')} | {seeds} | "
            f"{_pm(a, 'auc')} | {_pm(a, 'gauc')} | {_pm(a, 'log_loss')} | "
            f"{_pm(a, 'valid_auc')} |")
    return "\n".join(lines)


def history_slices(evaluated: dict) -> list[dict]:
    """The history-length slices of an evaluation report: [{"slice",
    "status", "impressions", "auc", "gauc", "bayes_auc"}] (numbers None
    where the slice is not measured); [] for a report without slices."""
    rows = (evaluated.get("slices") or {}).get("rows", [])
    return [{"slice": r["slice"], "status": r["status"],
             "impressions": r["impressions"],
             **{k: r.get(k) for k in ("auc", "gauc", "bayes_auc")}}
            for r in rows if r["dimension"] == "history_length"]


def _slice_names(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(s["slice"] for r in rows
                              for s in r.get("history_slices") or []))


def format_history_table(rows: Sequence[dict]) -> str:
    """AUC per history-length slice, one row per (run, N) that has them,
    then the Bayes-optimal AUC per slice; "" when no row has slices."""
    mine = [r for r in rows if r.get("history_slices")]
    names = _slice_names(mine)
    if not names:
        return ""
    head = "| name | N | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 2)]

    def cells(row: dict, key: str) -> str:
        got = {s["slice"]: s for s in row["history_slices"]}
        return " | ".join(
            _num(got[n].get(key)) if n in got else "–" for n in names)

    for r in mine:
        lines.append(f"| {_name(r)} | {r['n']} | {cells(r, 'auc')} |")
    counts = {s["slice"]: s["impressions"]
              for s in mine[0]["history_slices"]}
    lines.append("| impressions | | " + " | ".join(
        f"{counts.get(n, 0):,}" for n in names) + " |")
    if any(s.get("bayes_auc") is not None
           for s in mine[0]["history_slices"]):
        lines.append(f"| Bayes | | {cells(mine[0], 'bayes_auc')} |")
    return "\n".join(lines)


def _legend(rows: Sequence[dict]) -> list[str]:
    """One line per run that differs from the base config."""
    lines, seen = [], set()
    for r in rows:
        name = _name(r)
        if name in seen:
            continue
        seen.add(name)
        notes = [f"{k} = {json.dumps(v)}"
                 for k, v in (r.get("overrides") or {}).items()]
        if r.get("tokenizer", "trained") == "shuffled":
            notes.append("shuffled tokenizer (SIDs and latents permuted "
                         "among items)")
        if notes:
            lines.append(f"- `{name}`: {'; '.join(notes)}")
    return lines


def format_markdown_tables(rows: Sequence[dict]) -> str:
    """One `## <group>` section per group, in first-appearance order,
    with its mean ± std table when runs of the group differ only by
    seed."""
    parts = []
    aggregates = seed_aggregates(rows)
    for group in dict.fromkeys(_group(r) for r in rows):
        mine = [r for r in rows if _group(r) == group]
        legend = _legend(mine)
        parts += [f"## {group}", ""]
        if legend:
            parts += legend + [""]
        parts += [format_table(mine), ""]
        sliced = format_history_table(mine)
        if sliced:
            parts += ["AUC by history length (behaviours before the "
                      "request; Bayes: the optimum's AUC; – slice too small "
                      "or empty):", "", sliced, ""]
        seeds = [a for a in aggregates if a["group"] == group]
        if seeds:
            parts += ["Mean ± std over seeds (std with n − 1):", "",
                      format_seed_table(seeds), ""]
    return "\n".join(parts)


def write_outputs(results: dict, output_dir: str,
                  plots: bool = True) -> dict:
    """results.json, results.md and the plots; returns the paths written.

    Keys: json, markdown, and auc_vs_length, auc_vs_flops, ablations,
    learning_curves for the plots that had something to show (none with
    plots=False: the partial tables written after every run).
    """
    rows = results["rows"]
    paths = {
        "json": os.path.join(output_dir, "results.json"),
        "markdown": os.path.join(output_dir, "results.md"),
    }
    json_io.write_json(paths["json"], results)
    cfg = results["config"]
    c = cfg["data"]["max_candidates"]
    text = [f"# Experiment: {cfg['name']}", ""]
    if not results.get("complete", True):
        text += [f"**Partial: {len(rows)} of {len(results['runs'])} runs' "
                 "rows so far (the experiment is still running or was "
                 "interrupted).**", ""]
    if results.get("description"):
        text += [results["description"], ""]
    text += [
        f"Same data ({cfg['data']['data_dir']}), tokenizer, seed "
        f"{cfg['training']['seed']}, {cfg['training']['train_steps']} "
        f"training steps of batch {cfg['data']['batch_size']}, same head "
        f"(D = {cfg['model']['embedding_dim']}, H = "
        f"{cfg['model']['num_heads']}) unless a run's preset or overrides "
        f"say otherwise; G = A = {cfg['model']['num_agents']} groups "
        f"except full / sim_hard (G = N). S: short-term branch length "
        f"(0: none). MACs: multiply-adds per request "
        f"(hisac_tf/compressors/flops.py), C = {c} candidates.",
        "",
        format_markdown_tables(rows),
    ]
    if "seconds" in results:
        text += [f"Runs' own time: {results['seconds']:.0f} s.", ""]
    with tf.io.gfile.GFile(paths["markdown"], "w") as f:
        f.write("\n".join(text))
    if not plots or Figure is None:
        return paths
    for key, write in (("auc_vs_length", plot_auc_vs_length),
                       ("auc_vs_flops", plot_auc_vs_flops),
                       ("ablations", plot_ablations),
                       ("learning_curves", plot_learning_curves),
                       ("auc_by_history_length",
                        plot_auc_by_history_length)):
        path = os.path.join(output_dir, f"{key}.png")
        if write(rows, path):
            paths[key] = path
    return paths


# -------------------------------------------------------------- plots
def _bayes(rows: Sequence[dict]) -> float | None:
    bayes = [r["bayes_auc"] for r in rows if r.get("bayes_auc") is not None]
    return float(np.mean(bayes)) if bayes else None


def _save(fig: Any, path: str) -> None:
    fig.tight_layout()
    with tf.io.gfile.GFile(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def _plot_series(rows: Sequence[dict], path: str, key: str, xlabel: str,
                 log: bool) -> bool:
    """AUC against `key`, one series per run name; False if no rows."""
    if not rows:
        return False
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for name in dict.fromkeys(_name(r) for r in rows):
        mine = sorted((r for r in rows if _name(r) == name),
                      key=lambda r: r[key])
        ax.plot([r[key] for r in mine], [r["auc"] for r in mine],
                marker="o", label=name)
    bayes = _bayes(rows)
    if bayes is not None:
        ax.axhline(bayes, color="gray", linestyle="--",
                   label="Bayes-optimal AUC")
    if log:
        ax.set_xscale("log")
        if key == "n":  # Tick at the measured lengths, not at 10^k.
            ticks = sorted({r[key] for r in rows})
            ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("eval AUC")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, path)
    return True


def plot_auc_vs_length(rows: Sequence[dict], path: str) -> bool:
    """AUC vs N of the runs with more than one N; False if none."""
    lengths = collections.defaultdict(set)
    for r in rows:
        lengths[_name(r)].add(r["n"])
    mine = [r for r in rows if len(lengths[_name(r)]) > 1]
    return _plot_series(mine, path, "n", "history length N (log scale)",
                        True)


def plot_auc_vs_flops(rows: Sequence[dict], path: str) -> bool:
    """AUC vs per-request MACs of the first group's rows; False if none."""
    first = _group(rows[0]) if rows else None
    mine = [r for r in rows if _group(r) == first]
    return _plot_series(mine, path, "request_flops",
                        "multiply-adds per request", True)


def plot_ablations(rows: Sequence[dict], path: str) -> bool:
    """Horizontal bars: AUC per run at the most frequent N; False if none.

    Ties between Ns go to the one that appears first.
    """
    if not rows:
        return False
    n = collections.Counter(r["n"] for r in rows).most_common(1)[0][0]
    mine = [r for r in rows if r["n"] == n]
    names = [_name(r) for r in mine]
    aucs = [float(r["auc"]) for r in mine]
    bayes = _bayes(mine)
    fig = Figure(figsize=(6.4, max(2.4, 0.8 + 0.4 * len(mine))))
    ax = fig.subplots()
    y = np.arange(len(mine))
    ax.barh(y, aucs, color="tab:blue")
    for yi, auc in zip(y, aucs):
        ax.text(auc, yi, f" {auc:.4f}", va="center", fontsize="small")
    if bayes is not None:
        ax.axvline(bayes, color="gray", linestyle="--",
                   label="Bayes-optimal AUC")
        ax.legend(fontsize="small", loc="lower right")
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.invert_yaxis()  # Plan order from the top.
    values = aucs + ([bayes] if bayes is not None else [])
    low = min(0.5, min(values)) - 0.02
    ax.set_xlim(low, max(values) + 0.04)
    ax.set_xlabel(f"eval AUC at N = {n}")
    ax.grid(True, axis="x", alpha=0.3)
    _save(fig, path)
    return True


def plot_learning_curves(rows: Sequence[dict], path: str) -> bool:
    """Valid AUC vs training step, one line per (run, N) with a learning
    curve; False if none has one."""
    mine = [r for r in rows if r.get("learning_curve")]
    if not mine:
        return False
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for r in mine:
        curve = r["learning_curve"]
        ax.plot([p["step"] for p in curve], [p["valid_auc"] for p in curve],
                marker=".", label=f"{_name(r)} N={r['n']}")
    ax.set_xlabel("training step")
    ax.set_ylabel("valid AUC")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    _save(fig, path)
    return True


def plot_auc_by_history_length(rows: Sequence[dict], path: str) -> bool:
    """AUC per history-length slice, one line per (run, N) with slices and
    the Bayes-optimal AUC per slice dashed; False if no row has slices."""
    mine = [r for r in rows if r.get("history_slices")]
    names = _slice_names(mine)
    if not names:
        return False
    several_n = len({r["n"] for r in mine}) > 1
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    x = np.arange(len(names))

    def series(row: dict, key: str) -> list:
        got = {s["slice"]: s.get(key) for s in row["history_slices"]}
        return [np.nan if got.get(n) is None else got[n] for n in names]

    for r in mine:
        label = f"{_name(r)} N={r['n']}" if several_n else _name(r)
        ax.plot(x, series(r, "auc"), marker="o", label=label)
    bayes = series(mine[0], "bayes_auc")
    if not np.all(np.isnan(bayes)):
        ax.plot(x, bayes, color="gray", linestyle="--", marker=".",
                label="Bayes-optimal AUC")
    ax.set_xticks(x, names)
    ax.set_xlabel("history length (behaviours before the request)")
    ax.set_ylabel("eval AUC of the slice")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    _save(fig, path)
    return True
