"""benchmarks/history_window_oracle.py mirrors the generator's eval split."""

import pytest

from hisac_tf import config as config_lib
from hisac_tf.data import synthetic


def _module():
    from benchmarks import history_window_oracle

    return history_window_oracle


def test_oracle_reproduces_the_generators_eval_split(tmp_path):
    cfg = config_lib.load_config("tiny", [f"data.data_dir={tmp_path}"])
    summary = synthetic.generate(cfg, str(tmp_path), progress=False)
    oracle = _module()
    result = oracle.main(cfg, cfg.synthetic.num_users, [5, 20])
    # Same requests, impressions, labels and true ctr as the written eval
    # split: the Bayes row equals the generator's own Bayes-optimal AUC.
    assert result["eval_requests"] == summary["eval"]["requests"]
    assert result["impressions"] == summary["eval"]["impressions"]
    bayes = result["rows"][-1]
    assert bayes["window"] == "Bayes (true ctr)"
    assert bayes["auc"] == pytest.approx(summary["eval"]["bayes_auc"],
                                         abs=1e-6)
    assert [r["window"] for r in result["rows"][:-1]] == [5, 20, "all"]
    # The plug-in oracle carries signal, and never beats the true ctr by
    # more than sampling noise.
    for row in result["rows"][:-1]:
        assert 0.55 < row["auc"] < bayes["auc"] + 0.02
