"""The pocket benchmark and zoo: offline tasks, a tiny open_clip CLIP and one expert per task, shipped under assets/."""
