"""The weight-ensembling MoE: the layer (exact and low-rank experts), routing and routing per patch, and the fused CPU
kernel with its shape policy, build cache and calibration.

Import the modules themselves (``from wemoe.moe.layer import WeightEnsemblingMLP``); this face imports nothing.
"""
