"""Arithmetic on run documents: summaries, plots, and (later) verdicts, rooflines and projections.

Pure Python + numpy + matplotlib: importable without torch, so a planner on a laptop can read a run
document measured on a node. `python -m analysis --help` lists the commands.
"""
