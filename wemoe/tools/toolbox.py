"""The Toolbox: what the stateless tools of one process share.

A tool call names a zoo by name; the toolbox knows which names it may load (the built-in pocket zoo and the presets by
default; an app gives its own choices) and never reads a path a caller names. Each zoo is loaded once (a
:class:`~wemoe.workbench.loaded_zoo.LoadedZoo` shared read-only) and every call works on a fresh
:class:`~wemoe.workbench.workbench.Workbench` sharing one :class:`~wemoe.workbench.result_cache.ResultCache`, so a
repeated call (same zoo, experts, methods, parameters, adaptation settings) is answered from the cache. An app hands
the toolbox its own way of opening a workbench (``open_bench``) so that the tools and its pages share one loaded zoo
and one cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wemoe.errors import ZooError
from wemoe.workbench.result_cache import ResultCache

if TYPE_CHECKING:  # imported when a zoo opens: an app builds its tool list without model code
    from wemoe.workbench.loaded_zoo import LoadedZoo
    from wemoe.workbench.workbench import Workbench

ProgressFn = Callable[[float, str], None]
ZooLoader = Callable[[ProgressFn], tuple[Any, list | None]]
"""A zoo's loader: ``load(progress) -> (zoo, tasks)``, tasks None for zoos whose tasks are registered (as the app's)."""
BenchOpener = Callable[[str, ProgressFn], "Workbench"]
"""``open(zoo name, progress) -> Workbench`` on every expert of that zoo, sharing a loaded zoo and a result cache."""

MAX_IMAGE_BYTES = 20 * 2**20  # the app's default image upload limit (app.session.DEFAULT_IMAGE_SIZE)
MAX_PIXELS = 40_000_000  # the app's default pixel cap (app.session.AppConfig.max_pixels)
URL_SECONDS = 10.0  # the longest an image URL may take to answer and arrive


def no_progress(fraction: float, message: str) -> None:
    """A progress callback that shows nothing."""


def _registry_loader(name: str) -> ZooLoader:
    def load(progress: ProgressFn) -> tuple[Any, None]:
        from wemoe.loading import load_zoo

        return load_zoo(name, progress=progress), None

    return load


def default_zoos() -> dict[str, tuple[str, ZooLoader]]:
    """The zoos a toolbox offers by default: the shipped pocket zoo (offline) and the presets (Hugging Face hub)."""
    from wemoe.zoo.presets import PRESETS

    zoos = {"pocket": ("The pocket zoo: offline, a tiny CLIP and one expert per pocket task (seconds to load).",
                       _registry_loader("pocket"))}
    for name, spec in PRESETS.items():
        zoos[name] = (f"{spec.description} Downloaded from the Hugging Face hub on first use.", _registry_loader(name))
    return zoos


class Toolbox:
    """The zoos the tools may load, the loaded zoos and the result cache they share, and the limits on images."""

    def __init__(
        self,
        zoos: Mapping[str, tuple[str, ZooLoader]] | None = None,
        samples: int | None = None,
        open_bench: BenchOpener | None = None,
        results: ResultCache | None = None,
        pace: Callable[[Iterator], Iterator] | None = None,
        device: str | None = None,
        image_roots: Sequence[str | Path] = (),
        served: bool = False,
        max_image_bytes: int | None = MAX_IMAGE_BYTES,
        max_pixels: int = MAX_PIXELS,
        url_seconds: float = URL_SECONDS,
        zoo_slots: int = 2,
    ) -> None:
        """``zoos``: name -> (description, loader), the only zoos a call may name (default: :func:`default_zoos`);
        ``samples``: test images per task (None: all); ``open_bench``: how to open a zoo's workbench (default: load it
        once here, with ``results`` as the cache); ``pace``: wraps every adaptation run's step iterator (an app takes a
        compute slot per step there); ``device``: where adaptation runs (None: CUDA when present);
        ``image_roots``: folders whose files a call may name as an image (an app's upload folder; default none);
        ``served``: the tools serve others, so image URLs must lead to public addresses; ``max_image_bytes``,
        ``max_pixels``, ``url_seconds``: the limits on an image (None bytes: no limit)."""
        self.zoos = dict(default_zoos() if zoos is None else zoos)
        self.samples = samples
        self.results = results if results is not None else ResultCache()
        self._loaded = ResultCache(max_entries=zoo_slots)
        self._open = open_bench or self._open_here
        self.pace = pace or (lambda steps: steps)
        self.device = device
        self.image_roots = tuple(Path(root).expanduser().resolve() for root in image_roots)
        self.served = served
        self.max_image_bytes = max_image_bytes
        self.max_pixels = max_pixels
        self.url_seconds = url_seconds

    def zoo_names(self) -> list[str]:
        """The names a call may give as its zoo."""
        return list(self.zoos)

    def check_zoo(self, zoo: Any) -> str:
        """``zoo`` when it names one of :attr:`zoos`, else a ZooError listing them (nothing is read or loaded)."""
        if not isinstance(zoo, str) or zoo not in self.zoos:
            shown = repr(zoo) if isinstance(zoo, str) else f"a {type(zoo).__name__}"
            raise ZooError(f"Unknown zoo {shown[:80]}. Choose one of: {', '.join(self.zoos)} (list_zoos describes them;"
                           " zoos are named, never given as paths).")
        return zoo

    def bench(self, zoo: str, tasks: Sequence[str] | None = None, progress: ProgressFn | None = None) -> Workbench:
        """A fresh workbench (no merges) on zoo ``zoo``, only the experts of ``tasks`` when given (at least two; the
        zoo's ``chosen_tasks`` check), sharing the loaded zoo and the result cache with every other call."""
        bench = self._open(self.check_zoo(zoo), progress or no_progress)
        return bench if tasks is None else bench.with_tasks(list(tasks))

    def _open_here(self, zoo: str, progress: ProgressFn) -> Workbench:
        """The default opener: each zoo loaded once (its images and heads too), keyed as the app keys its zoos."""
        from wemoe.workbench.loaded_zoo import LoadedZoo
        from wemoe.workbench.workbench import Workbench

        key = (zoo, self.samples)

        def build() -> LoadedZoo:
            loaded_zoo, tasks = self.zoos[zoo][1](lambda f, m: progress(0.6 * f, m))
            loaded = LoadedZoo(loaded_zoo, tasks, samples=self.samples, seed=0)
            loaded.data(progress=lambda f, m: progress(0.6 + 0.3 * f, m))
            progress(0.95, "building zero-shot heads")
            loaded.heads()
            return loaded

        loaded, _ = self._loaded.get_or_compute(key, build)
        return Workbench.sharing(loaded, self.results, key)
