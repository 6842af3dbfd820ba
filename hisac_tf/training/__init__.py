"""Training: model state and checkpoints, `fit` and its callbacks, model
selection on the valid split."""
