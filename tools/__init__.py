"""Developer tools run from a checkout (`python -m tools.<package>.<x>`):
not installed with hisac_tf."""
