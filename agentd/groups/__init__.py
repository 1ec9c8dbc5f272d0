"""Groups: one run made of ranks on several nodes (spec, rank expansion, straggler/hang radar).

Pure functions over ``agentd.protocol``/``agentd.metrics`` types; the daemon wires them into job
admission and control (see docs/groups.md for what is wired and what is pending).
"""
