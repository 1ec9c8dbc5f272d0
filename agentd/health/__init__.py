"""Health rules evaluated near the data (in agentd, and in a relay for node liveness).

``rules`` holds the settings (defaults + a TOML rules file), ``engine`` turns derived samples
and the job table into alerts that fire and clear. Pure: imports metrics and protocol only.
"""
