"""The import job on Apache Beam: logs of billions of events -> requests.

The same records as the single-process importer
(`hisac_tf.data.importers.log_importer`), on the DirectRunner locally and
on Dataflow, Flink or Spark at scale (docs/data_at_scale.md). One idea
per module, in pipeline order: `log_file_events` (read one input file,
group its events by user), `log_timestamps` (the log's unit and split
end), `user_events` (one user's valid events: unit, range, duplicates),
`popularity_combine` (the negatives' popularity table), `user_requests`
(one user's requests and split plans),
`shard_writer_fn` (sharded TFRecords), `count_combine` (the summary's
counts), `staged_output` (write to a temporary directory, commit on
success) and `beam_importer.import_logs_beam`, the pipeline.
"""
