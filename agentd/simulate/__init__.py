"""A fleet simulator: K SIMULATED nodes on real sockets, speaking the real protocol."""

from agentd.simulate.fleet import SimNode
from agentd.simulate.runner import Fleet

__all__ = ["Fleet", "SimNode"]
