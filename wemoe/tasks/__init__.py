"""Images, labels and heads in: the task registry, the custom-task readers (folders, zips, parquet, hub datasets),
the standard tasks, encoded test images, splits, corruptions, zero-shot heads and logits.

Import the modules themselves (``from wemoe.tasks.registry import get_task``); this face imports nothing.
"""
