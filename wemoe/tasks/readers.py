"""Custom tasks from data: an image folder, a zip of one, a parquet file or a Hugging Face dataset
(:func:`task_from_folder`, :func:`task_from_zip`, :func:`task_from_parquet`, :func:`task_from_hub`), or from one text
line (:func:`task_from_source`). Archives are read into memory, bounded before and while reading (the ``TASK_MAX_*``
limits); nothing is unpacked to disk.
"""

from __future__ import annotations

import io
import shlex
import struct
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import datasets
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.exceptions import DatasetNotFoundError

from wemoe.errors import TaskError
from wemoe.tasks.registry import Task, normalise_columns

DEFAULT_TEMPLATES = ("a photo of a {c}.",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Limits on an uploaded task (a zip or parquet file), sized for a class: a few thousand small images, not a dataset.
TASK_MAX_BYTES = 256 * 2**20  # uncompressed, all images together (and the file itself)
TASK_MAX_FILES = 20_000  # images in a zip, rows in a parquet file
TASK_MAX_RATIO = 100  # uncompressed / compressed, per zip member and overall: images barely compress
TASK_MAX_DEPTH = 8  # folder levels of a zip entry
TASK_MAX_PIXELS = 2**25  # per image (33.5 megapixels, e.g. 8192 x 4096)
RATIO_FLOOR = 2**20  # members (and archives) under 1 MiB are exempt from the ratio check: they cannot blow up
_READ_CHUNK = 2**20
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
# What a damaged zip member raises while being read: bad CRC or header, broken deflate stream, truncated data.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error)


def task_from_folder(
    root: str | Path,
    name: str | None = None,
    templates: Sequence[str] = ("a photo of a {c}.",),
) -> Task:
    """A custom task from a local image folder (``root/<class name>/<image>``, or with ``train``/``test`` subfolders).

    Class names come from the folder names (underscores read as spaces). Without split subfolders every image is
    in the ``test`` split. A task needs at least two class folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise TaskError(f"Image folder {str(root)!r} does not exist. Give a folder with one subfolder per class.")
    has_splits = (root / "test").is_dir()
    test_root = root / "test" if has_splits else root
    classes = sorted(p.name for p in test_root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    if not classes:
        raise TaskError(f"Image folder {str(root)!r} has no class subfolders (expected root/<class>/<image>).")
    if len(classes) < 2:  # datasets' imagefolder would drop the label column of a single class
        raise TaskError(f"Image folder {root.name!r} has only one class folder ({classes[0]!r}); a task needs at "
                        "least two classes, one folder each.")

    def load_split(split: str) -> datasets.Dataset:
        folder = root / split if has_splits else root
        if has_splits and not folder.is_dir():
            raise TaskError(f"Task {name or root.name!r} has no {split!r} folder under {str(root)!r}.")
        if not has_splits and split != "test":
            raise TaskError(f"Task {name or root.name!r} has only a test split (no train/test subfolders).")
        data = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
        return normalise_columns(data)

    return Task(
        name=name or root.name,
        classnames=tuple(c.replace("_", " ") for c in classes),
        templates=tuple(templates),
        load_split=load_split,
        description=f"Custom image-folder task from {root}",
        source=str(root),
    )


def _size(n: float) -> str:
    """A byte count for a message: 1.0 GiB, 256 MiB, 12 KiB, 10 bytes."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB" if n >= 2**10 else f"{n:.0f} bytes"


def _why(error: BaseException) -> str:
    """An exception's text for the middle of a sentence (no trailing period)."""
    return str(error).strip().rstrip(".") or type(error).__name__


def _check_image(data: bytes, where: str, max_pixels: int) -> None:
    """Refuse bytes that PIL cannot fully decode, or an image of more than ``max_pixels`` pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # the size is checked below
            with PIL.Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height <= max_pixels:
                    image.load()
    except Exception as error:  # PIL raises many kinds (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise TaskError(f"{where} is not an image this app can read ({_why(error)}). Give PNG or JPEG images, "
                        "one file each.") from error
    if width * height > max_pixels:
        raise TaskError(f"{where} is {width} x {height} pixels, more than the {max_pixels:,} this app accepts for "
                        "one image. Resize the images (CLIP sees 224 x 224 pixels).")


def _in_memory(images: list[bytes], labels: list[int], names: Sequence[str]) -> datasets.Dataset:
    """A Dataset held in memory (no cache files): encoded images and class indices."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))})
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in images], "label": labels}, features=features
    )


def _check_limits(label: str, count: int, total: int, packed: int, max_bytes: int, max_files: int,
                  max_ratio: float, what: str = "images") -> None:
    """Refuse ``count`` images (or rows) of ``total`` bytes once read, ``packed`` bytes compressed, over the limits."""
    if total > max_bytes or count > max_files:
        raise TaskError(
            f"{label} unpacks to {count:,} {what}, {_size(total)}: more than this accepts ({max_files:,} {what}, "
            f"{_size(max_bytes)}). Use fewer or smaller images (a class-sized task)."
        )
    if total > RATIO_FLOOR and total > max_ratio * max(packed, 1):
        raise TaskError(
            f"{label} is compressed {total / max(packed, 1):.0f}:1 overall, more than the {max_ratio:g}:1 this "
            "accepts (a zip bomb?). Give ordinary image files (PNG or JPEG), which barely compress."
        )


def task_from_parquet(
    path: str | Path,
    classnames: Sequence[str] | None = None,
    name: str | None = None,
    templates: Sequence[str] = ("a photo of a {c}.",),
    max_bytes: int = TASK_MAX_BYTES,
    max_files: int = TASK_MAX_FILES,
    max_ratio: float = TASK_MAX_RATIO,
    max_pixels: int = TASK_MAX_PIXELS,
) -> Task:
    """A custom task from a parquet file with an image column and a label column (all rows form the test split).

    Class names come from the label column's ClassLabel feature when there is one, else from ``classnames``; a
    task needs at least two. The file is read once, into memory (no cache files), within limits checked first
    from its size and parquet metadata, then again on the rows actually read: at most ``max_bytes`` (default
    256 MiB) on disk and uncompressed, ``max_files`` rows (20,000), a ``max_ratio`` (100:1) of uncompressed to
    file size. Every image must be stored as bytes (not a path) that decode, of at most ``max_pixels`` pixels
    (33.5 megapixels).
    """
    path = Path(path).expanduser()
    label = f"{path.name!r}"
    if not path.is_file():
        raise TaskError(f"Parquet file {label} does not exist.")
    size = path.stat().st_size
    if size > max_bytes:
        raise TaskError(f"{label} is {_size(size)}: more than this accepts for a task ({_size(max_bytes)}). Use "
                        "fewer or smaller images (a class-sized task).")
    try:
        parquet = pq.ParquetFile(path)
        meta = parquet.metadata
        declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        rows = meta.num_rows
    except (pa.ArrowException, OSError, ValueError) as error:
        raise TaskError(f"{label} is not a parquet file this app can read ({_why(error)}). Write it with "
                        "datasets' Dataset.to_parquet (an Image column and a label column) and upload it "
                        "again.") from error
    _check_limits(label, rows, declared, size, max_bytes, max_files, max_ratio, what="rows")
    batches, read_rows, read_bytes = [], 0, 0
    try:
        with parquet:
            for batch in parquet.iter_batches(batch_size=256):
                read_rows += batch.num_rows
                read_bytes += batch.nbytes
                if read_rows > rows or read_bytes > max_bytes:
                    raise TaskError(
                        f"{label} is damaged or lies about its sizes: it holds more than its metadata declares "
                        f"({rows:,} rows, {_size(declared)}) or than this accepts ({_size(max_bytes)}). Write it "
                        "again with datasets' Dataset.to_parquet."
                    )
                batches.append(batch)
            data = datasets.Dataset(pa.Table.from_batches(batches, schema=parquet.schema_arrow))
    except TaskError:
        raise
    except Exception as error:  # pyarrow's decoding errors, or datasets' on a malformed schema
        raise TaskError(f"{label} is damaged or not a parquet file this app can read ({_why(error)}). Write it "
                        "again with datasets' Dataset.to_parquet and upload it again.") from error
    del batches
    try:
        data = normalise_columns(data)
    except TaskError as error:
        raise TaskError(f"Parquet file {label}: {error} Give an Image column and a label column.") from error
    label_feature = data.features["label"]
    if isinstance(label_feature, datasets.ClassLabel):
        names = tuple(label_feature.names)
    elif classnames is not None:
        names = tuple(classnames)
    else:
        raise TaskError(f"{label} has plain integer labels: pass the class names (one per label).")
    if len(names) < 2:
        raise TaskError(f"{label} has only {len(names)} class ({', '.join(map(repr, names)) or 'none'}); a task "
                        "needs at least two classes.")
    stray = next((i for i, y in enumerate(data["label"]) if not 0 <= y < len(names)), None)
    if stray is not None:
        raise TaskError(f"{label} row {stray} has the label {data['label'][stray]}, not one of the {len(names)} "
                        f"classes (0 to {len(names) - 1}). Give one class name per label.")
    for row, image in enumerate(data.cast_column("image", datasets.Image(decode=False))["image"]):
        if not image or image.get("bytes") is None:  # a path would make the server open its own files
            raise TaskError(f"{label} row {row} holds no image bytes (an image path or nothing): store the images "
                            "themselves in the file (datasets' Image feature embeds them).")
        _check_image(image["bytes"], f"{label} row {row}", max_pixels)

    def load_split(split: str) -> datasets.Dataset:
        if split != "test":
            raise TaskError(f"Task {name or path.stem!r} from a parquet file has only a test split.")
        return data

    return Task(
        name=name or path.stem,
        classnames=names,
        templates=tuple(templates),
        load_split=load_split,
        description=f"Custom parquet task from {path.name}",
        source=str(path),
    )


def _class_root(paths: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    """Where the class (or train/test) folders are among image paths: a zip of ``pets/`` holds ``pets/cat/...``, so
    descend through single wrapping folders that hold no images themselves."""
    prefix: tuple[str, ...] = ()
    while True:
        below = [p[len(prefix):] for p in paths]
        dirs = {rest[0] for rest in below if len(rest) > 1}
        if len(dirs) != 1 or any(len(rest) == 1 for rest in below) or "test" in dirs:
            return prefix
        if not any(len(rest) > 2 for rest in below):  # root/<one class>/<images>: not a wrapper
            return prefix
        prefix += (dirs.pop(),)


def _zip_members(archive: zipfile.ZipFile, label: str, max_depth: int) -> list[zipfile.ZipInfo]:
    """The image members a task reads, every entry checked first: inside the archive, not too deep, readable."""
    images, nested = [], False
    for member in archive.infolist():
        entry = member.filename.replace("\\", "/")
        parts = tuple(p for p in entry.split("/") if p)
        if entry.startswith("/") or ".." in parts or ":" in entry:
            raise TaskError(f"{label} holds an entry outside its folder ({member.filename!r}): refused.")
        depth = len(parts) - (0 if member.is_dir() else 1)
        if depth > max_depth:
            raise TaskError(f"{label} entry {member.filename!r} is {depth} folders deep, more than the {max_depth} "
                            "this accepts. Zip the image folder itself (class/xxx.png).")
        if member.is_dir() or any(part.startswith((".", "__")) for part in parts):
            continue
        nested = nested or entry.lower().endswith(".zip")
        if not entry.lower().endswith(IMAGE_SUFFIXES):
            continue
        if member.flag_bits & 0x1:
            raise TaskError(f"{label} is password-protected ({member.filename!r}): zip the images without a password.")
        if member.compress_type not in _ZIP_METHODS:
            raise TaskError(f"{label} entry {member.filename!r} uses a compression this app does not read (method "
                            f"{member.compress_type}): re-create the zip with ordinary (deflate) compression.")
        images.append(member)
    if not images:
        inner = " (zips inside the zip are not opened)" if nested else ""
        raise TaskError(f"{label} holds no images{inner}: zip a folder with one subfolder of images per class.")
    return images


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, label: str, budget: int, max_bytes: int) -> bytes:
    """A member's bytes, counted as they inflate: more than declared, short of it, or over ``budget`` (what is
    left of ``max_bytes``) is refused."""
    damaged = (f"{label} is damaged or lies about its sizes (entry {member.filename!r}: {{}}). Re-create the zip "
               "from the image folder and upload it again.")
    chunks, got = [], 0
    try:
        with archive.open(member) as source:
            while chunk := source.read(min(_READ_CHUNK, member.file_size - got + 1)):
                got += len(chunk)
                if got > member.file_size:
                    raise TaskError(damaged.format(f"inflates beyond its declared {member.file_size:,} bytes"))
                if got > budget:
                    raise TaskError(f"{label} unpacks to more than this accepts ({_size(max_bytes)}). Use fewer or "
                                    "smaller images (a class-sized task).")
                chunks.append(chunk)
    except TaskError:
        raise
    except RuntimeError as error:  # zipfile: a member encrypted without its flag
        raise TaskError(damaged.format(_why(error))) from error
    except _DAMAGED as error:
        raise TaskError(damaged.format(_why(error))) from error
    if got != member.file_size:
        raise TaskError(damaged.format(f"holds {got:,} bytes, not the {member.file_size:,} it declares"))
    return b"".join(chunks)


def task_from_zip(
    path: str | Path,
    name: str | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    max_bytes: int = TASK_MAX_BYTES,
    max_files: int = TASK_MAX_FILES,
    max_ratio: float = TASK_MAX_RATIO,
    max_depth: int = TASK_MAX_DEPTH,
    max_pixels: int = TASK_MAX_PIXELS,
) -> Task:
    """A custom task from a zip of an image folder (``class/xxx.png``, optionally inside one top folder or with
    ``train``/``test`` folders), as :func:`task_from_folder`; a task needs at least two class folders.

    The images are read straight from the zip into memory (a Dataset without cache files): nothing is written to
    disk. Only image files count (hidden entries, ``__MACOSX`` and other files are skipped; zips inside the zip are
    not opened), stored or deflate-compressed. Limits, checked before reading from the sizes the zip declares and
    again on the bytes actually inflated: the file and its images at most ``max_bytes`` (default 256 MiB)
    uncompressed in total, at most ``max_files`` images (20,000), a compression ratio of at most ``max_ratio``
    (100:1) per member and overall (members and archives under 1 MiB exempt), entries at most ``max_depth``
    (8) folders deep, inside the archive. A member that inflates beyond its declared size, falls short of it or
    fails its CRC is refused as damaged. Every image must decode, at most ``max_pixels`` pixels (33.5 megapixels).
    """
    path = Path(path).expanduser()
    label = f"{path.name!r}"
    if not path.is_file():
        raise TaskError(f"Zip file {label} does not exist.")
    size = path.stat().st_size
    if size > max_bytes:
        raise TaskError(f"{label} is {_size(size)}: more than this accepts for a task ({_size(max_bytes)}). Use "
                        "fewer or smaller images (a class-sized task).")
    try:
        archive = zipfile.ZipFile(path)
    except (*_DAMAGED, RuntimeError) as error:
        raise TaskError(f"{label} is not a zip file this app can read ({_why(error)}).") from error
    with archive:
        members = _zip_members(archive, label, max_depth)
        _check_limits(label, len(members), sum(m.file_size for m in members),
                      sum(m.compress_size for m in members), max_bytes, max_files, max_ratio)
        for member in members:
            ratio = member.file_size / max(member.compress_size, 1)
            if member.file_size > RATIO_FLOOR and ratio > max_ratio:
                raise TaskError(
                    f"{label} entry {member.filename!r} is compressed {ratio:.0f}:1, more than the {max_ratio:g}:1 "
                    "this accepts (a zip bomb?). Zip ordinary image files (PNG or JPEG), which barely compress."
                )

        paths = {m.filename: tuple(p for p in m.filename.replace("\\", "/").split("/") if p) for m in members}
        root = _class_root(list(paths.values()))
        below = {m.filename: paths[m.filename][len(root):] for m in members}
        has_splits = any(rest[0] == "test" and len(rest) > 1 for rest in below.values())
        splits: dict[str, list[tuple[str, zipfile.ZipInfo]]] = {}
        for member in sorted(members, key=lambda m: m.filename):
            rest = below[member.filename]
            if has_splits:
                if rest[0] not in ("train", "test") or len(rest) == 1:
                    continue  # other folders beside train/test are not read
                split, rest = rest[0], rest[1:]
            else:
                split = "test"
            if len(rest) == 1:
                raise TaskError(f"{label} holds an image outside a class folder ({member.filename!r}): put every "
                                "image in its class folder (class/xxx.png).")
            splits.setdefault(split, []).append((rest[0], member))
        classes = sorted({cls for cls, _ in splits.get("test", [])})
        where = " in its test folder" if has_splits else ""
        if not classes:
            raise TaskError(f"{label} has no class folders with images{where} (expected class/xxx.png).")
        if len(classes) < 2:
            raise TaskError(f"{label} has only one class folder{where} ({classes[0]!r}); a task needs at least two "
                            "classes, one folder each.")
        extra = sorted({cls for cls, _ in splits.get("train", [])} - set(classes))
        if extra:
            raise TaskError(f"{label} has train images of classes the test folder lacks ({', '.join(extra)}): give "
                            "train and test the same class folders.")
        budget, data = max_bytes, {}
        for split, items in splits.items():
            images = []
            for _, member in items:
                images.append(_read_member(archive, member, label, budget, max_bytes))
                budget -= len(images[-1])
                _check_image(images[-1], f"{label} entry {member.filename!r}", max_pixels)
            data[split] = _in_memory(images, [classes.index(cls) for cls, _ in items], classes)
    task_name = name or path.stem

    def load_split(split: str) -> datasets.Dataset:
        if split in data:
            return data[split]
        if has_splits:
            raise TaskError(f"Task {task_name!r} has no {split!r} folder in {label}.")
        raise TaskError(f"Task {task_name!r} has only a test split (no train/test folders in {label}).")

    return Task(
        name=task_name,
        classnames=tuple(c.replace("_", " ") for c in classes),
        templates=tuple(templates),
        load_split=load_split,
        description=f"Custom task from the zip {path.name}",
        source=str(path),
    )


def task_from_hub(
    dataset: str,
    split: str = "test",
    image_column: str | None = None,
    label_column: str | None = None,
    config: str | None = None,
    name: str | None = None,
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> Task:
    """A custom task from a Hugging Face dataset (a hub id, or a local folder ``datasets.load_dataset`` reads).

    ``split`` is the split evaluated and adapted on (the task's ``test`` split); the image and label columns are
    found by their features unless named. Class names come from the label column's ClassLabel feature, else from
    ``classnames``. The split is read once here, so a wrong id, split or column is reported at once.
    """
    label = name or dataset.rstrip("/").split("/")[-1]

    def load(which: str) -> datasets.Dataset:
        which = split if which == "test" else which
        call = f"datasets.load_dataset({dataset!r}{f', {config!r}' if config else ''}, split={which!r})"
        try:
            data = datasets.load_dataset(dataset, config, split=which)
        except DatasetNotFoundError as error:
            raise TaskError(
                f"Task {label!r}: the dataset {dataset!r} does not exist or is private ({error})."
            ) from error
        except ValueError as error:  # an unknown split or config
            raise TaskError(f"Task {label!r}: {dataset!r} has no split {which!r} ({error}).") from error
        except (ConnectionError, FileNotFoundError, OSError) as error:
            raise TaskError(
                f"Could not load the {which!r} split of task {label!r} from the dataset {dataset!r} (no network, or "
                f"offline and not cached: {error}). Pre-download it where there is network with "
                f'`python -c "import datasets; {call}"`, then set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1.'
            ) from error
        if not isinstance(data, datasets.Dataset):
            raise TaskError(f"Task {label!r}: {call} is not one split (give split=...).")
        for column in (image_column, label_column):
            if column is not None and column not in data.column_names:
                raise TaskError(f"Task {label!r}: {dataset!r} has no column {column!r} (columns: {data.column_names}).")
        try:
            return normalise_columns(data, image_column, label_column)
        except TaskError as error:
            raise TaskError(f"Task {label!r} ({dataset}): {error} Name them with image=... label=...") from error

    first = load("test")
    feature = first.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        names = tuple(feature.names)
    elif classnames is not None:
        names = tuple(classnames)
    else:
        raise TaskError(
            f"Task {label!r}: the label column of {dataset!r} holds plain integers, not class names (no ClassLabel "
            "feature): give the class names in label order (classes=name1,name2,...)."
        )
    if not isinstance(first.features["image"], datasets.Image):
        raise TaskError(
            f"Task {label!r}: the image column of {dataset!r} does not hold images (choose it with image=...)."
        )
    return Task(
        name=label,
        classnames=names,
        templates=tuple(templates),
        load_split=lambda which: first if which == "test" else load(which),
        description=f"Custom task from the dataset {dataset}" + (f" ({config})" if config else "") + f", split {split}",
        source=f"hf:{dataset}" + (f" ({config})" if config else ""),
    )


_SOURCE_OPTIONS = ("split", "image", "label", "config", "classes", "template")


def task_from_source(text: str, name: str, uploads: dict[str, str] | None = None) -> Task:
    """A custom task named ``name`` from one line of text: a local image folder (``class/xxx.png``), a ``.zip`` of
    one, a ``.parquet`` file, or ``hf:owner/dataset`` (a Hugging Face dataset), then ``key=value`` options:
    ``split=`` (default test), ``image=`` and ``label=`` (column names), ``config=``, ``classes=a,b,c`` (for plain
    integer labels) and ``template="a photo of a {c}."``. ``uploads`` maps uploaded files' names to their paths.

        pets: ./data/pets
        pets: pets.zip
        digits: hf:ylecun/mnist split=test image=image label=label
    """
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise TaskError(f"Task {name!r}: cannot read {text!r} ({error}).") from error
    if not words:
        raise TaskError(f"Task {name!r} has no source: give a folder, a .zip, a .parquet file or hf:owner/dataset.")
    source, options = words[0], {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or key not in _SOURCE_OPTIONS:
            known = ", ".join(k + "=" for k in _SOURCE_OPTIONS)
            raise TaskError(f"Task {name!r}: unknown option {word!r}; options are {known}.")
        options[key] = value
    template = options.pop("template", None)
    if template is not None and template.count("{c}") != 1:
        raise TaskError(f"Task {name!r}: the template {template!r} must hold {{c}} once (where the class name goes).")
    templates = (template,) if template else DEFAULT_TEMPLATES
    classes = options.pop("classes", None)
    classnames = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    if source.startswith("hf:"):
        return task_from_hub(source.removeprefix("hf:"), options.pop("split", "test"), options.pop("image", None),
                             options.pop("label", None), options.pop("config", None), name, classnames, templates)
    if options:
        raise TaskError(f"Task {name!r}: {', '.join(k + '=' for k in options)} only apply to hf: datasets.")
    path = Path((uploads or {}).get(source, source)).expanduser()
    if path.is_dir():
        return task_from_folder(path, name=name, templates=templates)
    if path.suffix.lower() == ".zip":
        return task_from_zip(path, name=name, templates=templates)
    if path.suffix.lower() == ".parquet":
        return task_from_parquet(path, classnames=classnames, name=name, templates=templates)
    if path.exists():
        raise TaskError(f"Task {name!r}: {source!r} is not a folder, .zip or .parquet file.")
    raise TaskError(
        f"Task {name!r}: {source!r} does not exist. Give an image folder (class/xxx.png), a .zip or .parquet file, "
        "or a Hugging Face dataset as hf:owner/name."
    )
