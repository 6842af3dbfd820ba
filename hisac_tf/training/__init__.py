"""Training: strategy, checkpoints, the training loop and evaluation."""
