"""Results out: accuracy tables, evaluation on samples, predictions of single images, reports and exported models.

Import the modules themselves (``from wemoe.evaluation.evaluate import evaluate``); this face imports nothing.
"""
