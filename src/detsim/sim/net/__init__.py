"""The simulated network: links and faults (network), TCP (tcp), UDP (udp), sockets."""

from detsim.sim.net.network import Network

__all__ = ["Network"]
