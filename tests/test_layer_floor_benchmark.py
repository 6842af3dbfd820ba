"""benchmarks/layer_floor.py runs on tiny sizes and writes its JSON (so
that it cannot rot; no timing is asserted)."""

import json

import pytest


def _module():
    from benchmarks import layer_floor

    return layer_floor


@pytest.mark.slow
def test_layer_floor_quick_run_writes_every_component(tmp_path):
    out = tmp_path / "layer_floor.json"
    result = _module().main(["--quick", f"--output={out}"])
    assert json.loads(out.read_text()) == result
    assert set(result["components"]) == {
        "attention_full", "attention_hisac", "routing", "user_side"}
    for row in result["components"].values():
        for key in ("floor_ms", "plain_ms", "lean_ms", "lean_over_floor",
                    "plain_over_floor", "plain_over_lean"):
            assert row[key] > 0, key
