"""Fault-injection probes (docs/reliability.md): every bad input and fault
tried against the jobs and the server, and what happened.

    python -m tools.reliability.probes   # writes docs/reliability.md
    python -m tools.reliability.inputs   # the bad-input rows alone
"""
