"""Cost / quality frontier: AUC (with a CI over seeds) against the cost
of a request and against training throughput, per configuration.

For each preset (default `longrange`, `features`, the declared side
features of docs/results.md "Declared features", and `taobao_mm`, the
real-shaped one: Taobao-MM's model and tokenizer sizes, here on
synthetic data of its shape) and each configuration:

  * every compressor (`hisac_tf.compressors.COMPRESSOR_NAMES`) with the
    preset's settings;
  * HiSAC at A in {50, 100, 200, 400} (`hisac_a<A>`; top_k widened so
    that voting can keep A agents, within the codebook sizes);
  * sparse routing, each agent reading its m nearest items
    (`hisac_sparse_m<m>`, m in {16, 64}), with the routing plan computed
    by the training input pipeline;

the experiment runner (hisac_tf/experiments) trains and evaluates one
model per seed on the preset's data (generated when missing), and this
script adds, per configuration:

  * AUC: mean over seeds, with a 95 % Student-t interval (none with one
    seed), and GAUC; per seed too, and, when `hisac` ran, each other
    configuration's paired difference to it (same seed, same data: per
    seed, mean, std and interval over seeds, `vs_hisac`);
  * per-request cost: multiply-adds and bytes of one request at the
    preset's N and C, and at N = 10,000, C = 1,000
    (`flops.config_cost`), and the latency the cost model predicts at
    the matmul rate and bandwidth calibrated on this machine
    (`bench_common.calibrate`);
  * training throughput: requests/s of the run's own training (its
    steps x batch / training seconds; short runs are dominated by
    tracing, so compare within one run of this script).

Writes the JSON (benchmarks/results/frontier.json), a markdown table on
stdout, a plot (docs/img/frontier.png: AUC against request cost and
against training requests/s, one panel row per preset), and with
--docs the table and the plot between the `frontier` markers of
docs/performance.md.

`--small` shrinks everything (tiny data, tokenizer, model and step
budget; CI and this 2-core machine); a full-size run (presets' own
sizes and budgets, 3 seeds, 16 configurations, 2 presets) takes GPU
hours and is not what `--small` measures.

`--set section.key=value` (repeatable) changes every configuration of
every preset: applied after the preset (and --small), before each
method's own overrides (so `--set model.routing_top_m=8` does not
change `hisac_sparse_m16`), recorded in the JSON ("set") and printed
with the table. Unknown sections or keys are errors before anything
runs. The models (and the experiment tables) of a run with --set go to
their own folders under the work dir (`models_set-<hash>`), so runs
with other overrides never resume or reuse each other's checkpoints;
the data and tokenizer are shared unless a --set key is in `data` or
`synthetic` (both get their own folders) or `tokenizer` (the tokenizer
does).

Method names: the compressors, `hisac_a<A>` and `hisac_sparse_m<m>` for
any A, m >= 1 (the defaults are the A and m above).

    python -m benchmarks.frontier [--small]
        [--presets=longrange,features,taobao_mm]
        [--methods=hisac,hisac_a50,...] [--seeds=0,1,2]
        [--set section.key=value ...]
        [--work_dir=runs/frontier] [--output=PATH] [--plot=PATH]
        [--docs=docs/performance.md]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sys
import time

# Imports hisac_tf before TensorFlow (Keras 2).
from benchmarks import bench_common as bc

# isort: split
import numpy as np  # noqa: E402

from hisac_tf import config as config_lib  # noqa: E402
from hisac_tf.compressors import flops as flops_lib  # noqa: E402
from hisac_tf.compressors.factory import COMPRESSOR_NAMES  # noqa: E402
from pipelines import experiment  # noqa: E402

RESULTS = os.path.join(bc.ROOT, "benchmarks", "results")
PLOT = os.path.join(bc.ROOT, "docs", "img", "frontier.png")
PRESETS = ("longrange", "features", "taobao_mm")
AGENTS = (50, 100, 200, 400)
SPARSE_M = (16, 64)
SEEDS = (0, 1, 2)
# Two-sided 95 % Student-t quantiles by degrees of freedom (seeds - 1).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447,
       7: 2.365, 8: 2.306, 9: 2.262}
# --small: tiny data, tokenizer, model and budget (the `tiny` preset's
# sizes), whatever the preset.
SMALL = (
    "data.max_history=40", "data.max_candidates=6", "data.batch_size=8",
    "data.shuffle_buffer=64", "data.num_parallel_reads=2",
    "synthetic.num_users=60", "synthetic.num_items=300",
    "synthetic.mean_history=30", "synthetic.min_history=5",
    "synthetic.requests_per_user=2", "synthetic.candidates_per_request=6",
    "synthetic.num_topics=4", "synthetic.subtopics_per_topic=4",
    "synthetic.longtail_interests=4", "synthetic.periodic_interests=2",
    "synthetic.content_dim=16", "synthetic.num_shards=2",
    "tokenizer.codebook_sizes=[8, 8]", "tokenizer.latent_dim=8",
    "tokenizer.hidden_dims=[16]", "tokenizer.epochs=3",
    "tokenizer.batch_size=64",
    "model.embedding_dim=8", "model.num_heads=2", "model.mlp_dims=[16]",
    "model.top_k=[4, 4]", "model.num_agents=8",
    "model.item_vocab_buckets=1000", "model.category_vocab_buckets=50",
    "model.user_vocab_buckets=1000", "model.time_gap_buckets=8",
    "model.short_term_length=10", "model.count_slots=16",
    "training.train_steps=6", "training.checkpoint_every=6",
    "training.log_every=6", "training.valid_every=0",
)
SMALL_NOTE = "; --small: tiny sizes and budget, not a quality result"
MARK_BEGIN = "<!-- frontier:begin -->"
MARK_END = "<!-- frontier:end -->"


def method_names() -> tuple[str, ...]:
    return (tuple(COMPRESSOR_NAMES) + tuple(f"hisac_a{a}" for a in AGENTS)
            + tuple(f"hisac_sparse_m{m}" for m in SPARSE_M))


def method_overrides(method: str, cfg) -> tuple[str, dict]:
    """(compressor, {"section.key": value}) of one configuration."""
    if method in COMPRESSOR_NAMES:
        return method, {}
    found = re.fullmatch(r"hisac_a(\d+)", method)
    if found:
        agents = int(found.group(1))
        return "hisac", {"model.num_agents": agents,
                         "model.top_k": list(widened_top_k(cfg, agents))}
    found = re.fullmatch(r"hisac_sparse_m(\d+)", method)
    if found:
        return "hisac", {"model.routing_top_m": int(found.group(1)),
                         "training.routing_in_input_pipeline": True}
    raise ValueError(f"unknown frontier method {method!r} (choose from "
                     f"{', '.join(method_names())})")


def known_method(method: str) -> bool:
    """A compressor, `hisac_a<A>` or `hisac_sparse_m<m>` (A, m >= 1)."""
    if method in COMPRESSOR_NAMES:
        return True
    found = re.fullmatch(r"hisac_(?:a|sparse_m)(\d+)", method)
    return bool(found) and int(found.group(1)) >= 1


def widened_top_k(cfg, agents: int) -> tuple[int, ...]:
    """The preset's top_k with k_1 widened until prod(top_k) >= A (each
    k_l <= K_l): voting can then keep A agents."""
    top_k = list(cfg.model.top_k)
    sizes = cfg.tokenizer.codebook_sizes
    rest = int(np.prod(top_k[1:])) if len(top_k) > 1 else 1
    top_k[0] = min(sizes[0], max(top_k[0], math.ceil(agents / rest)))
    return tuple(top_k)


def set_tag(sets) -> str:
    """The folder suffix of a run with `--set` overrides ("" without)."""
    if not sets:
        return ""
    return "_set-" + hashlib.sha1(
        "\n".join(sets).encode("utf-8")).hexdigest()[:8]


def base_overrides(preset: str, small: bool, work_dir: str, sets=()):
    """(overrides of the preset, the preset's work folder).

    `sets` (`--set`) come last. The models and the experiment folder get
    `set_tag(sets)`; the data too when a set key is in `data` or
    `synthetic`, the tokenizer when one is in those or `tokenizer`.
    """
    root = os.path.join(work_dir, preset + ("_small" if small else ""))
    tag = set_tag(sets)
    sections = {s.split("=", 1)[0].split(".", 1)[0].strip() for s in sets}
    data_tag = tag if sections & {"data", "synthetic"} else ""
    tok_tag = tag if sections & {"data", "synthetic", "tokenizer"} else ""
    return (*(SMALL if small else ()),
            f"data.data_dir={root}/data{data_tag}",
            f"tokenizer.output_dir={root}/tokenizer{tok_tag}",
            f"training.model_dir={root}/models{tag}",
            *sets), root


def plan_for(cfg, methods, seeds) -> dict:
    runs = []
    for method in methods:
        compressor, overrides = method_overrides(method, cfg)
        run = {"name": method, "compressor": compressor,
               "lengths": [cfg.data.max_history], "group": "frontier",
               "set": overrides}
        if len(seeds) > 1:
            run["seeds"] = list(seeds)
        else:
            run["set"] = dict(overrides, **{"training.seed": seeds[0]})
        runs.append(run)
    return {"description": "cost / quality frontier (benchmarks/"
            "frontier.py)", "generate_data": True, "runs": runs}


def run_config(preset: str, base: tuple, method: str):
    """The config one configuration trains with (the seed aside)."""
    cfg = config_lib.load_config(preset, base)
    compressor, overrides = method_overrides(method, cfg)
    return config_lib.load_config(preset, [
        *base, f"model.compressor={compressor}",
        *(f"{k}={_value(v)}" for k, v in overrides.items())])


def _value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def interval(values) -> dict:
    """Mean, std (ddof 1) and 95 % Student-t interval over seeds (None
    with one)."""
    values = [float(v) for v in values]
    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": mean, "std": None, "low": None, "high": None,
                "seeds": 1}
    std = float(np.std(values, ddof=1))
    half = T95.get(len(values) - 1, 1.96) * std / math.sqrt(len(values))
    return {"mean": mean, "std": std, "low": mean - half,
            "high": mean + half, "seeds": len(values)}


def paired_deltas(configurations: list[dict],
                  reference: str = "hisac") -> None:
    """Adds `vs_<reference>` to every other configuration: per metric
    (auc, gauc), the per-seed difference configuration − reference on
    the seeds both ran (same seed, same data) and their `interval`.
    Nothing when the reference did not run."""
    ref = next((c for c in configurations if c["method"] == reference),
               None)
    if ref is None:
        return
    ref_seeds = {r["seed"]: r for r in ref["per_seed"]}
    for conf in configurations:
        common = [r for r in conf["per_seed"] if r["seed"] in ref_seeds]
        if conf is ref or not common:
            continue
        out = {}
        for metric in ("auc", "gauc"):
            deltas = [r[metric] - ref_seeds[r["seed"]][metric]
                      for r in common]
            out[metric] = {"per_seed": dict(zip(
                [r["seed"] for r in common], deltas)), **interval(deltas)}
        conf[f"vs_{reference}"] = out


def cost_of(cfg, calibration: dict) -> dict:
    """Per-request cost at the config's N, C and at N = 10k, C = 1k."""
    out = {}
    for key, n, c in (("preset", None, None), ("n10k_c1k", 10_000, 1_000)):
        cost = flops_lib.config_cost(cfg, n=n, c=c)
        seconds = flops_lib.predict_latency(
            cost, 2.0 * calibration["matmul_macs_per_s"],
            calibration["elementwise_bytes_per_s"])["request_s"]
        out[key] = {"macs": cost["request"]["macs"],
                    "bytes": cost["request"]["bytes"],
                    "predicted_ms": 1000.0 * seconds}
    return out


def summarise(preset, base, methods, rows, calibration) -> list[dict]:
    out = []
    for method in methods:
        mine = [r for r in rows if r["name"] == method
                or r.get("seed_of") == method]
        if not mine:
            continue
        run_cfg = run_config(preset, base, method)
        batch = run_cfg.data.batch_size
        throughput = [r["step"] * batch / r["train_seconds"]
                      for r in mine if r.get("train_seconds")]
        per_seed = [{
            "seed": r["seed"], "auc": r["auc"], "gauc": r["gauc"],
            "valid_auc": r.get("valid_auc"),
            "train_requests_per_s": (r["step"] * batch / r["train_seconds"]
                                     if r.get("train_seconds") else None),
            "seconds": r.get("seconds")} for r in mine]
        out.append({
            "method": method,
            "compressor": run_cfg.model.compressor,
            "num_agents": run_cfg.model.num_agents,
            "routing_top_m": run_cfg.model.routing_top_m,
            "active_agents_mean": float(np.mean(
                [r["active_groups_mean"] for r in mine])),
            "auc": interval([r["auc"] for r in mine]),
            "gauc": interval([r["gauc"] for r in mine]),
            "cost": cost_of(run_cfg, calibration),
            "train_requests_per_s": (float(np.median(throughput))
                                     if throughput else None),
            "seeds": [r["seed"] for r in mine],
            "per_seed": per_seed,
        })
    paired_deltas(out)
    return out


def table(results: dict) -> str:
    rows = []
    for preset, p in results["presets"].items():
        for s in p["configurations"]:
            auc = s["auc"]
            ci = ("-" if auc["low"] is None
                  else f"{auc['low']:.4f}–{auc['high']:.4f}")
            delta = s.get("vs_hisac", {}).get("auc")
            rows.append([
                preset, s["method"], f"{auc['mean']:.4f}", ci,
                f"{s['gauc']['mean']:.4f}",
                "-" if delta is None else f"{delta['mean']:+.4f}" + (
                    "" if delta["std"] is None
                    else f" ± {delta['std']:.4f}"),
                f"{s['active_agents_mean']:.3g}",
                s["cost"]["preset"]["macs"],
                s["cost"]["preset"]["predicted_ms"],
                s["cost"]["n10k_c1k"]["macs"],
                s["cost"]["n10k_c1k"]["predicted_ms"],
                s["train_requests_per_s"] or "-"])
    return bc.markdown_table(
        ["preset", "configuration", "AUC", "95 % CI", "GAUC",
         "Δ AUC vs hisac (paired, ± std)", "active groups",
         "request MACs", "predicted ms", "MACs at N=10k, C=1k",
         "predicted ms at 10k/1k", "train requests/s"], rows)


def plot(results: dict, path: str) -> bool:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    presets = list(results["presets"])
    fig = Figure(figsize=(11, 4 * len(presets)))
    for i, preset in enumerate(presets):
        confs = results["presets"][preset]["configurations"]
        for j, (xkey, label) in enumerate((
                ("macs", "multiply-adds per request at N = 10k, C = 1k"),
                ("train", "training requests / s"))):
            ax = fig.add_subplot(len(presets), 2, 2 * i + j + 1)
            for s in confs:
                x = (s["cost"]["n10k_c1k"]["macs"] if xkey == "macs"
                     else s["train_requests_per_s"])
                if x is None:
                    continue
                auc = s["auc"]
                err = (None if auc["low"] is None else
                       [[auc["mean"] - auc["low"]],
                        [auc["high"] - auc["mean"]]])
                ax.errorbar([x], [auc["mean"]], yerr=err, fmt="o",
                            capsize=3)
                ax.annotate(s["method"], (x, auc["mean"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("AUC (95 % CI over seeds)")
            ax.set_title(f"{preset}{' (--small)' if results['small'] else ''}")
            ax.grid(True, alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    return True


def write_docs(path: str, results: dict, table_md: str,
               plot_path: str) -> None:
    """Replaces the text between the frontier markers of `path`."""
    with open(path) as f:
        text = f.read()
    if MARK_BEGIN not in text or MARK_END not in text:
        raise ValueError(f"{path} has no {MARK_BEGIN} ... {MARK_END} "
                         "section to write the frontier into")
    rel = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(path)))
    env = results["environment"]
    body = (
        f"{MARK_BEGIN}\n"
        f"`{results['command']}`: {env['device']}, load average "
        f"{env['load_average_1m']:.1f}, {env['time_utc']}, commit "
        f"{env['git_commit']}, {results['seconds']:.0f} s"
        f"{SMALL_NOTE if results['small'] else ''}."
        f"\n\n{table_md}\n\n![cost / quality frontier]({rel})\n{MARK_END}")
    start = text.index(MARK_BEGIN)
    end = text.index(MARK_END) + len(MARK_END)
    with open(path, "w") as f:
        f.write(text[:start] + body + text[end:])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true",
                        help="tiny data, model and budget (CI, CPU)")
    parser.add_argument("--presets", type=_names, default=PRESETS)
    parser.add_argument("--methods", type=_methods, default=None)
    parser.add_argument("--seeds", type=_seeds, default=None)
    parser.add_argument(
        "--set", action="append", type=_override, default=[],
        metavar="section.key=value",
        help="override for every configuration of every preset (after "
        "the preset, before the method's own); repeatable")
    parser.add_argument("--work_dir", default=os.path.join("runs",
                                                           "frontier"))
    parser.add_argument("--output",
                        default=os.path.join(RESULTS, "frontier.json"))
    parser.add_argument("--plot", default=PLOT)
    parser.add_argument("--docs", default="",
                        help="write the table and plot into this file "
                        "between the frontier markers")
    args = parser.parse_args(argv)
    methods = args.methods or method_names()
    seeds = args.seeds or ((0, 1) if args.small else SEEDS)
    began = time.perf_counter()
    sets = tuple(args.set)
    for preset in args.presets:  # Bad overrides fail before any run.
        try:
            for method in methods:
                run_config(preset, base_overrides(
                    preset, args.small, args.work_dir, sets)[0], method)
        except (config_lib.ConfigError, ValueError) as e:
            parser.error(f"--set {' '.join(sets)} on preset {preset!r}: "
                         f"{e}")
    calibration = bc.calibrate(calls=3, size=0.05 if args.small else 1)
    results = {"benchmark": "frontier", "small": args.small, "set": sets,
               "command": "python -m benchmarks.frontier " + " ".join(
                   argv if argv is not None else sys.argv[1:]),
               "calibration": calibration, "presets": {}}
    for preset in args.presets:
        base, root = base_overrides(preset, args.small, args.work_dir,
                                    sets)
        cfg = config_lib.load_config(preset, base)
        out = experiment.main(
            cfg, output_dir=os.path.join(root,
                                         "experiment" + set_tag(sets)),
            plan=plan_for(cfg, methods, seeds), generate_data=True)
        results["presets"][preset] = {
            "n": cfg.data.max_history, "c": cfg.data.max_candidates,
            "train_steps": cfg.training.train_steps,
            "configurations": summarise(preset, base, methods,
                                        out["rows"], calibration),
        }
    results["seconds"] = time.perf_counter() - began
    # The runs' own seconds (a row reused from an earlier invocation
    # keeps the seconds it took, so this is the whole cost).
    results["runs_seconds"] = sum(
        r["seconds"] or 0.0 for p in results["presets"].values()
        for c in p["configurations"] for r in c["per_seed"])
    results["environment"] = bc.environment()
    bc.write_json(args.output, results)
    table_md = table(results)
    if sets:
        print(f"overrides (--set): {', '.join(sets)}")
    print(table_md)
    if plot(results, args.plot):
        results["plot"] = args.plot
    if args.docs:
        write_docs(args.docs, results, table_md, args.plot)
    print(f"wrote {args.output} in {results['seconds']:.0f} s")
    return results


def _names(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected names, got {text!r}")
    return names


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(t) for t in _names(text))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"expected distinct seeds >= 0 separated by commas, got {text!r}")
    return seeds


def _methods(text: str) -> tuple[str, ...]:
    names = _names(text)
    unknown = [m for m in names if not known_method(m)]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {unknown} (choose from "
            f"{', '.join(COMPRESSOR_NAMES)}, hisac_a<A>, "
            "hisac_sparse_m<m> with A, m >= 1)")
    return names


def _override(text: str) -> str:
    """One `section.key=value` (checked against the config when the
    presets are known)."""
    try:
        config_lib.parse_override(text)
    except (config_lib.ConfigError, ValueError) as e:
        raise argparse.ArgumentTypeError(
            f"expected section.key=value, got {text!r}: {e}") from None
    return text.strip()


if __name__ == "__main__":
    main()
