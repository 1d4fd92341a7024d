"""The result cache's disk layer: deterministic results kept in a directory, so a restarted app serves them at once.

:class:`~wemoe.workbench.result_cache.ResultCache` asks a :class:`ResultStore` before computing a key and hands it
every finished result. An entry is one file named by a hash of its key: ``<sha256>.safetensors`` (the tensors, with
the key, the codec's JSON and a digest in the safetensors header) or ``<sha256>.json`` when the result has no tensors.
Never a pickle: values go through a codec (:mod:`wemoe.workbench.result_codecs`); a result no codec can write stays in
memory only.

- Keys: the cache's key (zoo fingerprint, method, parameters, seeds; see ``Workbench.sharing``) plus
  :data:`FORMULAS_VERSION`; a key holding anything but strings, numbers, booleans, None and tuples is not stored.
- Written to a temporary file in the same directory, flushed to disk, then renamed over the entry: a reader (this
  process or another sharing the directory) sees the old entry or the new one, never half of one.
- Read back only when the file is whole and its own: a truncated or damaged file (bad header, digest mismatch), one of
  another key (a collision, a copied file) or of another format version is ignored with one log line.
- Bounded: beyond ``max_bytes`` the least recently used entries go first (a read refreshes an entry's time).
- Never fatal: a directory that cannot be created or written (read-only, full) leaves every result in memory, said
  once in the log; reads go on where they can.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import torch

from wemoe.workbench.fingerprint import update_with_tensors

CACHE_DIR_ENV = "MERGE_EXPLORER_CACHE_DIR"
CACHE_MB_ENV = "MERGE_EXPLORER_CACHE_MB"
DEFAULT_MAX_MB = 4096.0
# Bump when a formula behind a cached result changes (a merge method, adaptation, evaluation, routing analysis,
# classification) or a codec's format does: every entry written before then misses.
FORMULAS_VERSION = 1
FORMAT = "merge-explorer result"
STALE_TEMPORARY_S = 3600.0  # temporary files older than this were left by a crashed writer: removed
_NO_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS}  # errors after which writing is not tried again

log = logging.getLogger(__name__)
MISSING = object()  # what :meth:`ResultStore.load` returns for a key it does not hold


class ResultStore:
    """A directory of results, safe to share between threads and between processes."""

    def __init__(self, directory: str | os.PathLike, max_bytes: float = DEFAULT_MAX_MB * 2**20) -> None:
        """``directory``: created when missing (its parents too); ``max_bytes``: the entries' total size kept."""
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.writable = True  # False after a permission error: writes are not tried again
        self.saved = 0
        self.loaded = 0
        self._said: set[Any] = set()  # what was already logged (once each)
        self._lock = threading.Lock()
        self.usable = True  # False when the directory could not be made: nothing is read or written
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self.usable = False
            self._cannot_write(error)

    @classmethod
    def from_env(cls) -> ResultStore | None:
        """The store in ``results/`` of ``$MERGE_EXPLORER_CACHE_DIR`` (:func:`results_dir`) bounded by
        ``$MERGE_EXPLORER_CACHE_MB`` (default 4096), or None when the variable is not set."""
        directory = results_dir()
        return None if directory is None else cls(directory / "results", **store_bound())

    def entry_path(self, key: Hashable) -> Path | None:
        """Where ``key``'s entry lives, without its suffix (None: the key cannot be stored)."""
        stored = stored_key(key)
        return None if stored is None else self.directory / hashlib.sha256(stored.encode()).hexdigest()

    def load(self, key: Hashable, codec: Any = None) -> Any:
        """The stored result of ``key`` decoded with ``codec`` (default: the tree codec), or :data:`MISSING`."""
        stored = stored_key(key)
        if stored is None or not self.usable:
            return MISSING
        stem = self.directory / hashlib.sha256(stored.encode()).hexdigest()
        for path in (stem.with_suffix(".safetensors"), stem.with_suffix(".json")):
            try:
                value = self._read(path, stored, _codec(codec))
            except FileNotFoundError:
                continue
            except OSError as error:  # the directory or the file cannot be read: not the entry's fault
                self._say_once(("read", error.errno), logging.WARNING, "the results directory %s cannot be read (%s): "
                               "results are computed again", self.directory, error.strerror or error)
                continue
            except Exception as error:  # noqa: BLE001 - a damaged entry of any kind is only a miss
                self._ignored(path, error)
                continue
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: the last to be dropped
            self.loaded += 1
            return value
        return MISSING

    def save(self, key: Hashable, value: Any, codec: Any = None) -> bool:
        """Write ``value`` as ``key``'s entry (atomically); False when it was not written (a key or value that cannot
        be stored, an entry larger than the bound, a directory that cannot be written). Never raises."""
        from wemoe.workbench.result_codecs import NotEncodable

        stored = stored_key(key)
        if stored is None or not self.writable or not self.usable:
            return False
        codec = _codec(codec)
        try:
            encoded = codec.encode(value)
        except NotEncodable as reason:
            log.debug("not stored on disk (%s): %s", reason, stored[:160])
            return False
        stem = self.directory / hashlib.sha256(stored.encode()).hexdigest()
        try:
            if encoded.tensors:
                path = stem.with_suffix(".safetensors")
                self._write_tensors(path, stored, codec.name, encoded)
            else:
                path = stem.with_suffix(".json")
                self._write_json(path, stored, codec.name, encoded.meta)
            # a key's other kind of file would be read first or second: it must not outlive this one
            (stem.with_suffix(".json" if encoded.tensors else ".safetensors")).unlink(missing_ok=True)
        except (OSError, ValueError, TypeError) as error:
            if isinstance(error, OSError):
                self._cannot_write(error)
            else:
                log.debug("not stored on disk (%s): %s", error, stored[:160])
            return False
        except Exception as error:  # noqa: BLE001 - the store never breaks a computation
            self._say_once(("save", type(error)), logging.WARNING, "could not store a result in %s (%s: %s); it is "
                           "kept in memory", self.directory, type(error).__name__, error)
            return False
        self.saved += 1
        self.trim()
        return True

    def trim(self) -> int:
        """Drop the least recently used entries beyond ``max_bytes`` and temporary files left by crashed writers;
        returns how many entries were dropped. One process trims at a time (a file lock); others skip."""
        dropped = 0
        with self._trim_lock() as held:
            if not held:
                return 0
            entries, total, now = [], 0, time.time()
            try:
                paths = list(self.directory.iterdir())
            except OSError:
                return 0
            for path in paths:
                try:
                    info = path.stat()
                except OSError:
                    continue  # dropped meanwhile
                if path.name.endswith(".tmp"):
                    if now - info.st_mtime > STALE_TEMPORARY_S:
                        path.unlink(missing_ok=True)
                elif path.suffix in (".json", ".safetensors"):
                    entries.append((info.st_mtime, info.st_size, path))
                    total += info.st_size
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                with contextlib.suppress(OSError):
                    path.unlink()
                    dropped += 1
                total -= size
        if dropped:
            log.info("dropped %d old results from %s to stay within %.0f MB", dropped, self.directory,
                     self.max_bytes / 2**20)
        return dropped

    def size(self) -> int:
        """The entries' total size in bytes."""
        return sum(p.stat().st_size for p in self.directory.glob("*") if p.suffix in (".json", ".safetensors"))

    def _read(self, path: Path, stored: str, codec: Any) -> Any:
        """The value in ``path``; raises when the file is not a whole entry of ``stored`` written by ``codec``."""
        from wemoe.workbench.result_codecs import Encoded

        if path.suffix == ".json":
            with open(path, encoding="utf-8") as file:
                entry = json.load(file)
            meta_text = json.dumps(entry.get("meta"), sort_keys=True, allow_nan=True)
            header, tensors = entry, {}
            digest = hashlib.sha256(meta_text.encode()).hexdigest()
        else:
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), framework="pt") as file:
                header = dict(file.metadata() or {})
            tensors = load_file(str(path))  # checks that every tensor's bytes are there
            header["meta"] = json.loads(header.get("meta", "null"))
            meta_text = json.dumps(header["meta"], sort_keys=True, allow_nan=True)
            digest = _tensors_digest(tensors, meta_text)
        if header.get("format") != FORMAT or str(header.get("version")) != str(FORMULAS_VERSION):
            raise ValueError(f"not an entry of this format version ({header.get('format')!r} {header.get('version')})")
        if header.get("key") != stored:
            raise ValueError("a foreign entry: it holds another key")
        if header.get("codec") != codec.name:
            raise ValueError(f"written by codec {header.get('codec')!r}, read with {codec.name!r}")
        if header.get("digest") != digest:
            raise ValueError("damaged: its digest does not match its contents")
        return codec.decode(Encoded(tensors, header["meta"]))

    def _write_json(self, path: Path, stored: str, codec: str, meta: Any) -> None:
        meta_text = json.dumps(meta, sort_keys=True, allow_nan=True)
        entry = {"format": FORMAT, "version": FORMULAS_VERSION, "key": stored, "codec": codec, "meta": meta,
                 "digest": hashlib.sha256(meta_text.encode()).hexdigest()}
        data = json.dumps(entry, allow_nan=True).encode()
        with self._temporary(path) as temporary, open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())

    def _write_tensors(self, path: Path, stored: str, codec: str, encoded: Any) -> None:
        from safetensors.torch import save_file

        tensors = standalone(encoded.tensors)
        meta_text = json.dumps(encoded.meta, sort_keys=True, allow_nan=True)
        header = {"format": FORMAT, "version": str(FORMULAS_VERSION), "key": stored, "codec": codec,
                  "meta": json.dumps(encoded.meta, allow_nan=True), "digest": _tensors_digest(tensors, meta_text)}
        with self._temporary(path) as temporary:
            save_file(tensors, str(temporary), metadata=header)
            with open(temporary, "rb+") as file:
                os.fsync(file.fileno())

    @contextlib.contextmanager
    def _temporary(self, path: Path) -> Iterator[Path]:
        """A temporary file beside ``path`` (unique to this writer), renamed onto ``path`` when the block succeeds."""
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            yield temporary
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _trim_lock(self) -> Iterator[bool]:
        """Whether this process holds the directory's trim lock for the block (never waits for it)."""
        try:
            import fcntl
        except ImportError:  # not POSIX: trim under this process's own lock only
            with self._lock:
                yield True
            return
        try:
            handle = open(self.directory / ".trim.lock", "a+b")  # noqa: SIM115 - closed below
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False  # another process trims now
                return
            with self._lock:
                yield True
        finally:
            handle.close()

    def _cannot_write(self, error: OSError) -> None:
        if error.errno in _NO_WRITE or isinstance(error, (NotADirectoryError, FileExistsError)):
            self.writable = False
        self._say_once(("write", error.errno), logging.WARNING, "the results directory %s cannot be written (%s): "
                       "results are kept in memory only", self.directory, error.strerror or error)

    def _ignored(self, path: Path, error: Exception) -> None:
        try:
            info = path.stat()
            seen = (str(path), info.st_size, info.st_mtime_ns)
        except OSError:
            seen = (str(path),)
        self._say_once(seen, logging.WARNING, "ignored the stored result %s: %s", path.name,
                       f"{type(error).__name__}: {error}"[:200])

    def _say_once(self, what: Any, level: int, message: str, *args: Any) -> None:
        with self._lock:
            if what in self._said:
                return
            self._said.add(what)
        log.log(level, message, *args)


def results_dir() -> Path | None:
    """The directory the app keeps what should survive a restart in (``$MERGE_EXPLORER_CACHE_DIR``; None: unset)."""
    directory = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(directory) if directory else None


def store_bound() -> dict[str, float]:
    """The store's size bound from ``$MERGE_EXPLORER_CACHE_MB`` (default 4096 MB), as ``ResultStore`` keywords."""
    megabytes = float(os.environ.get(CACHE_MB_ENV, "") or DEFAULT_MAX_MB)
    return {"max_bytes": megabytes * 2**20}


def stored_key(key: Hashable) -> str | None:
    """``key`` with the format version as canonical JSON (tuples as lists), or None when it holds anything else than
    strings, numbers, booleans, None and tuples."""
    try:
        tree = _key_tree(key)
    except TypeError:
        return None
    return json.dumps([FORMAT, FORMULAS_VERSION, tree], separators=(",", ":"), allow_nan=True)


def _key_tree(key: Any) -> Any:
    if key is None or type(key) in (bool, int, float, str):
        return key
    if type(key) is tuple:
        return [_key_tree(part) for part in key]
    raise TypeError(f"a {type(key).__name__} in a key")


def _codec(codec: Any) -> Any:
    if codec is not None:
        return codec
    from wemoe.workbench.result_codecs import TREE

    return TREE


def standalone(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors as safetensors writes them: on the CPU, contiguous, none sharing memory with another."""
    out, seen = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def _tensors_digest(tensors: dict[str, torch.Tensor], meta_text: str) -> str:
    """A digest of the tensors (names, dtypes, shapes, bytes, in name order) and of the JSON beside them."""
    digest = hashlib.sha256(meta_text.encode())
    update_with_tensors(digest, {name: tensors[name] for name in sorted(tensors)})
    return digest.hexdigest()
