"""A simulated GPU cluster: nodes built from recorded real NVIDIA outputs, speaking the probe
protocol, following a scripted story in time.

- ``model``: ``SimCluster`` and ``SimNode`` (the sample document at a story time) and ``Story``
  (the demo's timeline, or a steady healthy cluster);
- ``recorded``: the recordings (``recordings/``) and how they are read (the probe's parsers);
- ``node``: ``SimProbe`` (the probe's protocol around a simulated node) and ``main``, which
  stands in for a node's interpreter behind a real sshd (benchmarks, tests with many nodes);
- ``transport``: ``SimTransports``, the demo's in-process transport for the real engine.

Used by ``ugro-health demo`` (``cli/demo.py``) and by ``benchmarks/``.
"""
