"""The pocket benchmark and zoo: offline tasks, a tiny open_clip CLIP and one expert per task, shipped under assets/."""

from wemoe.pocket.loader import DEFAULT_PATH, load_pocket_zoo, verify

__all__ = ["DEFAULT_PATH", "load_pocket_zoo", "verify"]
