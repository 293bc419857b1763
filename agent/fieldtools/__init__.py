"""Field-engineer tools: qualify a device and a model before go-live (docs/field-guide.md).

* ``edge-guard bench`` — `agent.fieldtools.bench` (measurements) and
  `agent.fieldtools.benchreport` (machine info, table, ``--compare`` against a baseline).
* ``edge-guard stress`` — `agent.fieldtools.stress` (the command), `agent.fieldtools.stressinputs`
  (images or video frames, labels, the profile), `agent.fieldtools.robustness` (the corruption
  sweep and its metrics), `agent.fieldtools.probes` (shortcut probes, confidence slices),
  `agent.fieldtools.gates` (deployment gates), `agent.fieldtools.stressreport` (the summary) and
  `agent.fieldtools.plots` (robustness curves PNG).

The corruption library they use stays in `agent.corruptions`: the detection benchmark shares it.
Nothing is imported here, so ``agent.cli`` loads a tool only when its subcommand is registered.
"""

from __future__ import annotations

__all__: list[str] = []
