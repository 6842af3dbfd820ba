"""HiSAC layers: one paper component per file."""
