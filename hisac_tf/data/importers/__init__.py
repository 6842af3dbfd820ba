"""Raw behaviour logs -> request-level TFRecords (docs/design.md §4).

One responsibility per module, in the order the job uses them:
readers (`csv_reader`, `parquet_reader` and `log_reader` over
`field_values`, `bad_rows`, `event_columns`, `gfile_stream`; the side
tables `user_table` and `item_table`), `request_formation`,
`negative_sampler`, `time_split`, `import_summary`, and
`log_importer.import_logs`, the job's body. Records are written by
`hisac_tf.data.shard_writer`. `raw_log_stats` gives a raw log's request
statistics per window and C before importing (`hisac-inspect --raw`).
"""
