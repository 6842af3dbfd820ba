"""HiSAC models: the RQ-VAE tokenizer and the ranker."""
