"""How the pocket zoo was found: candidate zoos, the adaptation diagnostics, the sweeps and FINDINGS.md.

Run the scripts from the repository root, e.g. ``python research/pocket/pocket_research.py --tag base``.
"""
