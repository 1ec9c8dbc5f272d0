"""agentd: the Fleetdeck node daemon, its libraries and the agentctl command line."""

__version__ = "0.1.0"
