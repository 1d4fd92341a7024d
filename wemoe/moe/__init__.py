"""The weight-ensembling MoE: the layer (exact and low-rank experts), its per-sample linear op, the routing hooks
(recording, forcing), routing and routing per patch, and the fused CPU kernel with its shape policy, build cache and
calibration.

Import the modules themselves (``from wemoe.moe.layer import WeightEnsemblingMLP``); this face imports nothing.
"""
