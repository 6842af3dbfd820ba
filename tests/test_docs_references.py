"""The docs agree with the code (issue 20 item 6): every repository path
and public dotted name quoted in README.md and docs/*.md exists, and the
lists the docs repeat (presets, compare draws) match the code.

A path is a quoted token that starts with a top-level folder of the
repository (`hisac_tf/...`, `configs/x.json`, `docs/x.md`, a folder
ending in `/`); a dotted name starts with one of the project's packages
(`hisac_tf.compressors.flops`, `serving.grpc_client.HisacClient`).
Quoted means inside `inline code` or a fenced code block; an inline span
may wrap a path over two lines after a `/`. Paths with placeholders
(`<model_dir>/...`, `*`) are outputs, not files of the repository.
"""

from __future__ import annotations

import glob
import importlib
import inspect
import os
import re

import pytest

from hisac_tf import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_LEVEL = ("hisac_tf", "docs", "configs", "tests", "benchmarks", "tools",
             "pipelines", "serving", "examples")
PACKAGES = ("hisac_tf", "serving", "pipelines", "benchmarks", "tools")
# Quoted paths that exist only outside a checkout, with why (none now:
# the README no longer quotes the installed presets folder).
ELSEWHERE: dict = {}

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)")
PATH = re.compile(r"(?<![\w/<.\-$])((?:%s)/[\w./\-]*)" % "|".join(TOP_LEVEL))
NAME = re.compile(r"(?<![\w./\-])((?:%s)(?:\.[A-Za-z_]\w*)+)" %
                  "|".join(PACKAGES))


def doc_files() -> list[str]:
    return [os.path.join(ROOT, "README.md")] + sorted(
        glob.glob(os.path.join(ROOT, "docs", "*.md")))


def quoted_spans(text: str) -> list[str]:
    """The fenced blocks, then the inline code spans of a markdown text
    (a span wrapped after a `/` is joined)."""
    spans = FENCE.findall(text)
    rest = FENCE.sub("", text)
    spans += [re.sub(r"/\s*\n\s*", "/", s) for s in INLINE.findall(rest)]
    return spans


def quoted_references(text: str) -> tuple[set, set]:
    """(paths, dotted names) quoted in a markdown text."""
    paths, names = set(), set()
    for span in quoted_spans(text):
        paths.update(p.rstrip(".,;:)") for p in PATH.findall(span))
        names.update(NAME.findall(span))
    return paths, names


def path_exists(path: str) -> bool:
    full = os.path.join(ROOT, path)
    return os.path.isdir(full) if path.endswith("/") else \
        os.path.exists(full)


def name_exists(name: str) -> bool:
    """True when `name` is a module, or an attribute chain of one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_the_scanner_finds_paths_and_names():
    text = ("See `hisac_tf/config.py` and `docs/\ndesign.md`, "
            "`<model_dir>/eval.json`, `hisac_tf.compressors.flops`:\n"
            "```\npython -m benchmarks.serving_cost --tiny\n"
            "cat configs/tiny.json\n```\n")
    paths, names = quoted_references(text)
    assert paths == {"hisac_tf/config.py", "docs/design.md",
                     "configs/tiny.json"}
    assert names == {"hisac_tf.compressors.flops", "benchmarks.serving_cost"}
    assert not path_exists("hisac_tf/nope.py")
    assert not name_exists("hisac_tf.compressors.nope")
    assert not name_exists("hisac_tf.compressors.flops.nope")
    assert name_exists("hisac_tf.compressors.flops.request_cost")


def test_every_quoted_path_and_name_exists():
    missing = []
    for doc in doc_files():
        with open(doc) as f:
            paths, names = quoted_references(f.read())
        where = os.path.relpath(doc, ROOT)
        missing += [f"{where}: path {p}" for p in sorted(paths)
                    if p not in ELSEWHERE and not path_exists(p)]
        missing += [f"{where}: name {n}" for n in sorted(names)
                    if not name_exists(n)]
    assert not missing, "quoted in the docs but not in the repository:\n" \
        + "\n".join(missing)


def test_the_docs_name_every_preset():
    presets = config_lib.preset_names()
    with open(os.path.join(ROOT, "README.md")) as f:
        table = set(re.findall(r"^\| (\w+) \| [\d,]+ \|", f.read(), re.M))
    doc = config_lib.__doc__
    missing = [f"README preset table: {p}" for p in presets
               if p not in table]
    missing += [f"hisac_tf/config.py docstring: {p}" for p in presets
                if f"`{p}`" not in doc]
    assert not missing, "\n".join(missing)


def test_compare_draws_have_one_default():
    from absl import flags

    from hisac_tf.evaluation import eval_compare
    from pipelines import evaluate

    default = inspect.signature(eval_compare.compare).parameters[
        "num_draws"].default
    assert default == eval_compare.DEFAULT_DRAWS
    assert flags.FLAGS["compare_draws"].default == default
    assert inspect.signature(evaluate.compare_main).parameters[
        "draws"].default == default


@pytest.mark.parametrize(
    "name", ["build_model(cfg, feature_spec, tables, item_features)"])
def test_config_doc_names_the_build_signature(name):
    from hisac_tf.models.build import build_model

    assert name in config_lib.__doc__
    assert list(inspect.signature(build_model).parameters) == [
        "cfg", "feature_spec", "tables", "item_features"]
