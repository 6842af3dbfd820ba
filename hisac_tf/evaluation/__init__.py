"""Evaluation of a trained checkpoint: metrics over the eval split, slices,
calibration, bootstrap comparison of reports, figures and summaries."""
