"""``codealign study``: train a set of arms (configs) over seeds and compare them with confidence intervals.

* ``config.py``: the study file (arms, seeds, matching on judged samples) and each (arm, seed)'s
  resolved training config;
* ``runner.py``: runs every (arm, seed) as its own ``codealign train`` process, ``--jobs`` at a time,
  resuming each after a kill;
* ``report.py``: reads the runs' ``metrics.jsonl`` and writes ``table.md``, ``table.json`` and
  ``curves.png`` (means and 95% Student-t intervals over seeds);
* ``command.py``: the command line.
"""
