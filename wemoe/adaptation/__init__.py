"""Test-time adaptation: the run (a generator of steps, resumable in chunks), the contract every adaptive merge keeps,
and adapting on several devices with Lightning Fabric.

Import the modules themselves (``from wemoe.adaptation.adapt import adapt``); this face imports nothing.
"""
