"""FeatureSpec round trip, truncation, padding and every bad input."""

import gzip

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.data.feature_spec import DataError, FeatureSpec
from hisac_tf.data import input_pipeline

SPEC = FeatureSpec(max_history=4, max_candidates=3, with_true_ctr=True)


def make_request(user=1, hist=6, cands=2, **changes):
    request = {
        "user_id": user,
        "request_time": 1000,
        "gender": 1,
        "age_bucket": 3,
        "hist_item_ids": list(range(11, 11 + hist)),
        "hist_category_ids": [5] * hist,
        "hist_behaviors": [1] * hist,
        "hist_timestamps": list(range(100, 100 + hist)),
        "cand_item_ids": list(range(51, 51 + cands)),
        "cand_category_ids": [7] * cands,
        "labels": [1] + [0] * (cands - 1),
        "true_ctr": [0.5] * cands,
    }
    request.update(changes)
    return request


def write(path, requests, spec=SPEC, compression="GZIP"):
    with tf.io.TFRecordWriter(str(path), compression) as w:
        for r in requests:
            if isinstance(r, bytes):
                w.write(r)
            else:
                w.write(spec.to_example(r).SerializeToString())
    return str(path)


def read_all(files, spec=SPEC, **kw):
    ds = input_pipeline.request_dataset(files, spec, 8, deterministic=True,
                                        **kw)
    return list(input_pipeline.iterate(ds, files, spec))


def test_round_trip_identical_tensors(tmp_path):
    requests = [make_request(user=u, hist=h, cands=c)
                for u, h, c in [(1, 2, 1), (2, 4, 3), (3, 0, 2)]]
    path = write(tmp_path / "a.tfrecord.gz", requests)
    (batch,) = read_all([path])
    np.testing.assert_array_equal(batch["user_id"], [1, 2, 3])
    np.testing.assert_array_equal(batch["hist_length"], [2, 4, 0])
    np.testing.assert_array_equal(
        batch["hist_item_ids"],
        [[11, 12, 0, 0], [11, 12, 13, 14], [0, 0, 0, 0]],
    )
    np.testing.assert_array_equal(batch["cand_count"], [1, 3, 2])
    np.testing.assert_array_equal(
        batch["cand_item_ids"], [[51, 0, 0], [51, 52, 53], [51, 52, 0]]
    )
    np.testing.assert_array_equal(
        batch["labels"], [[1, 0, 0], [1, 0, 0], [1, 0, 0]]
    )
    np.testing.assert_allclose(batch["true_ctr"][1], [0.5, 0.5, 0.5])
    assert batch["hist_item_ids"].shape == (3, 4)
    assert batch["labels"].dtype == tf.float32


def test_truncation_keeps_newest_and_is_counted(tmp_path):
    path = write(tmp_path / "a.tfrecord.gz", [make_request(hist=7)])
    (batch,) = read_all([path])
    np.testing.assert_array_equal(batch["hist_item_ids"][0], [14, 15, 16, 17])
    np.testing.assert_array_equal(
        batch["hist_timestamps"][0], [103, 104, 105, 106]
    )
    assert int(batch["hist_length"][0]) == 4
    assert int(batch["hist_raw_length"][0]) == 7
    summary = input_pipeline.summarize(iter([batch]))
    assert summary["histories_truncated"] == 1


def test_plain_and_sharded_files_shuffle_deterministic(tmp_path):
    files = [
        write(tmp_path / f"s{i}.tfrecord", [make_request(user=10 * i + j)
              for j in range(1, 6)], compression="")
        for i in range(1, 4)
    ]

    def users(seed):
        ds = input_pipeline.request_dataset(
            files, SPEC, 4, compression="", shuffle_buffer=16,
            deterministic=True, seed=seed)
        return np.concatenate([b["user_id"].numpy() for b in ds]).tolist()

    assert sorted(users(1)) == sorted(
        [10 * i + j for i in range(1, 4) for j in range(1, 6)])
    assert users(1) == users(1)
    assert users(1) != users(2)


def test_empty_history_is_valid_and_counted(tmp_path):
    path = write(tmp_path / "a.tfrecord.gz", [make_request(hist=0)])
    (batch,) = read_all([path])
    assert int(batch["hist_length"][0]) == 0
    assert input_pipeline.summarize(iter([batch]))["histories_empty"] == 1


def _bad_example(field, value, kind="int64"):
    ex = SPEC.to_example(make_request())
    feat = ex.features.feature[field]
    feat.Clear()
    if kind == "int64":
        feat.int64_list.value.extend(value)
    else:
        feat.float_list.value.extend(value)
    return ex.SerializeToString()


def _missing(field):
    ex = SPEC.to_example(make_request())
    del ex.features.feature[field]
    return ex.SerializeToString()


@pytest.mark.parametrize(
    "record, message",
    [
        pytest.param(make_request(hist_item_ids=[11, 0, 13, 14, 15, 16]),
                     "hist_item_ids must hold ids >= 1", id="zero-id"),
        pytest.param(make_request(user=-3), "user_id must hold ids >= 1",
                     id="negative-user"),
        pytest.param(make_request(cand_item_ids=[51, -2]),
                     "cand_item_ids must hold ids >= 1", id="negative-cand"),
        pytest.param(make_request(
            hist_timestamps=[100, 101, 99, 103, 104, 105]),
            "hist_timestamps must be sorted", id="unsorted"),
        pytest.param(make_request(
            hist_timestamps=[100, 101, 102, 103, 104, 2000]),
            "hist_timestamps must be <= request_time", id="future"),
        pytest.param(make_request(cands=4, true_ctr=[0.1] * 4),
                     "1..3 candidates", id="too-many-candidates"),
        pytest.param(make_request(cands=0, labels=[], true_ctr=[]),
                     "1..3 candidates", id="no-candidates"),
        pytest.param(make_request(labels=[1, 2]), "labels must be 0 or 1",
                     id="label-2"),
        pytest.param(make_request(hist_behaviors=[1, 1]),
                     "hist_behaviors must have as many entries",
                     id="ragged-history"),
        pytest.param(make_request(labels=[1]),
                     "labels must have as many entries", id="ragged-labels"),
        pytest.param(_missing("labels"), "missing field labels",
                     id="missing-field"),
        pytest.param(_bad_example("cand_item_ids", [1.0, 2.0], "float"),
                     "cand_item_ids has type float_list", id="wrong-dtype"),
    ],
)
def test_bad_record_names_file_record_and_field(tmp_path, record, message):
    path = write(tmp_path / "bad.tfrecord.gz", [make_request(), record])
    with pytest.raises(DataError, match=message) as err:
        read_all([path])
    assert f"{path}:1" in str(err.value)


def test_truncated_file_names_file_and_record(tmp_path):
    path = write(tmp_path / "t.tfrecord", [make_request()] * 3,
                 compression="")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 20])
    ds = input_pipeline.request_dataset([path], SPEC, 8, compression="")
    with pytest.raises(DataError, match=r"t.tfrecord: corrupt or truncated "
                       r"TFRecord file after record 1"):
        list(input_pipeline.iterate(ds, [path], SPEC, compression=""))


def test_corrupt_gzip_file_is_named(tmp_path):
    path = str(tmp_path / "c.tfrecord.gz")
    with gzip.open(path, "wb") as f:
        f.write(b"this is not a tfrecord stream at all" * 4)
    with pytest.raises(DataError, match="c.tfrecord.gz: corrupt"):
        read_all([path])


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        input_pipeline.list_files(str(tmp_path / "nothing-here-*"))


def test_to_example_errors_name_field():
    with pytest.raises(DataError, match="missing field 'labels'"):
        SPEC.to_example({k: v for k, v in make_request().items()
                         if k != "labels"})
    with pytest.raises(DataError, match="'hist_item_ids' must hold integers"):
        SPEC.to_example(make_request(hist_item_ids=[1.5] * 6))
