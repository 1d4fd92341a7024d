"""Files the app serves (results, exports, figures): written whole under a temporary name, then moved into place, in
folders of this process's own, so that a download never reads a half-written file, not even beside a second app
process on the same machine."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

GRADIO_TEMP_ENV = "GRADIO_TEMP_DIR"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; moved onto ``path`` in one step when the block succeeds, removed
    when it fails."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def own_gradio_folder() -> str:
    """Give this process a gradio cache folder of its own (``$GRADIO_TEMP_DIR``, unless the operator set one), removed
    at exit: gradio names cached files by their content, so two processes sharing one folder write the same files at
    once. Call before the Blocks are built."""
    if not os.environ.get(GRADIO_TEMP_ENV):
        folder = tempfile.mkdtemp(prefix="merge-explorer-gradio-")
        os.environ[GRADIO_TEMP_ENV] = folder
        atexit.register(shutil.rmtree, folder, True)
    return os.environ[GRADIO_TEMP_ENV]
