"""ugro-health: an agentless health monitor for GPU training clusters.

The package is layered (see DESIGN.md): ``model`` and ``probe`` import nothing of ours;
``transport``, ``store`` and ``engine`` never import ``cli`` or ``render``; only ``cli`` imports
typer and only ``transport.ssh`` imports paramiko.
"""

__version__ = "0.1.0"
