"""Training: strategy, checkpoints, `fit` and its callbacks, model
selection on the valid split, evaluation."""
