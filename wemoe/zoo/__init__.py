"""Weights in: the zoo's data classes, where checkpoints come from (open_clip tags, the hub, local files), the
presets, checkpoint reading, CLIP creation, Hugging Face conversion, and which sources a visitor may name.

Import the modules themselves (``from wemoe.zoo.zoo import Zoo``); this face imports nothing.
"""
