"""Research behind the shipped artefacts: scripts, diagnostics and findings (not part of the ``wemoe`` library)."""
