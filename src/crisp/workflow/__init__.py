"""Workflows that chain the stages: the demo, sweeps over training settings, evaluation and the report.

Each workflow calls the stage libraries (:mod:`crisp.simulate`, :mod:`crisp.train`,
:mod:`crisp.predict`, :mod:`crisp.picking`, :mod:`crisp.io.stacks`, :mod:`crisp.metrics`) and keeps
every stage's output on disk, so a rerun skips what is finished and a user can inspect or redo any
stage with the single-stage verbs.
"""
