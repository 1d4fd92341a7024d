"""Views of what a merge does: task-vector interference, cross-task accuracy, lambda sweeps, robustness under
corruptions, cost next to accuracy, and their command line.

Import the modules themselves (``from wemoe.analysis.sweep import lambda_sweep``); this face imports nothing.
"""
