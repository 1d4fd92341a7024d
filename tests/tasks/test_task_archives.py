"""Uploaded task archives (zip, parquet) on a public app: bounded, read into memory, every image checked.

Zip bombs (declared or real), zips that lie about their sizes or fail their CRC, too many or too deep entries,
one class folder, non-images named .png; parquet files over the limits, unreadable, or pointing at server files.
Every refusal is a TaskError naming the file (never a server path) and leaves nothing in the temporary folder.
"""

from __future__ import annotations

import io
import struct
import tempfile
import time
import zipfile

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from wemoe.errors import TaskError
from wemoe.tasks.readers import TASK_MAX_DEPTH, TASK_MAX_FILES, task_from_folder, task_from_parquet, task_from_zip


@pytest.fixture
def temp(tmp_path, monkeypatch):
    """The process's temporary folder, empty at the start: what a task leaves behind shows up here."""
    folder = tmp_path / "temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _png(seed: int, size: int = 8) -> tuple[bytes, np.ndarray]:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue(), pixels


def _zip(path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _patch(path, entry: str, **fields: int) -> None:
    """Overwrite ``crc``, ``compress_size``, ``file_size`` or ``flag_bits`` of one entry in both its local header
    and the central directory: a zip that lies."""
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(entry).header_offset
    data = bytearray(path.read_bytes())
    local_at = {"flag_bits": (6, "<H"), "crc": (14, "<I"), "compress_size": (18, "<I"), "file_size": (22, "<I")}
    central_at = {"flag_bits": (8, "<H"), "crc": (16, "<I"), "compress_size": (20, "<I"), "file_size": (24, "<I")}
    central = data.find(b"PK\x01\x02")
    while central >= 0:
        length = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46: central + 46 + length].decode() == entry:
            break
        central = data.find(b"PK\x01\x02", central + 46)
    assert central >= 0 and data[local: local + 4] == b"PK\x03\x04"
    for key, value in fields.items():
        struct.pack_into(local_at[key][1], data, local + local_at[key][0], value)
        struct.pack_into(central_at[key][1], data, central + central_at[key][0], value)
    path.write_bytes(bytes(data))


def _refused(temp, match: str, call, *args, **kwargs) -> str:
    """The TaskError message of a refused call, checked: no server path, no '..', nothing left on disk."""
    with pytest.raises(TaskError, match=match) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert str(temp.parent) not in message, message
    assert ".." not in message, message
    assert list(temp.iterdir()) == [], "a refused task left files behind"
    return message


def _pets(seed: int = 0, top: str = "pets/") -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    entries, pixels = {}, {}
    for i, name in enumerate(["cat/0.png", "cat/1.png", "hot_dog/0.png", "hot_dog/1.png", "hot_dog/2.png"]):
        entries[top + name], pixels[top + name] = _png(seed + i)
    return entries, pixels


def _pixels(data: datasets.Dataset) -> list[tuple[int, bytes]]:
    return sorted((row["label"], np.asarray(row["image"].convert("RGB")).tobytes()) for row in data)


def test_good_zip_loads_in_memory_with_its_classes_labels_and_pixels(tmp_path, temp):
    entries, pixels = _pets()
    extras = {"__MACOSX/pets/cat/._0.png": b"resource fork", "pets/notes.txt": b"not an image",
              "pets/more.zip": _zip(tmp_path / "inner.zip", {"x/0.png": b"never opened"}).read_bytes()}
    path = _zip(tmp_path / "pets.zip", {**entries, **extras})
    task = task_from_zip(path, templates=("a {c}.",))
    assert task.name == "pets" and task.classnames == ("cat", "hot dog")
    data = task.dataset("test")
    assert data.column_names == ["image", "label"] and data.cache_files == []
    assert data.features["label"].names == ["cat", "hot_dog"]
    expected = [(int("hot_dog" in name), p.tobytes()) for name, p in pixels.items()]
    assert _pixels(data) == sorted(expected)
    assert len(task.dataset(samples=2, seed=1)) == 2
    with pytest.raises(TaskError, match="only a test split"):
        task.dataset("train")
    assert list(temp.iterdir()) == [], "reading a zip task must leave no temporary folder"


def test_train_test_zip_gives_both_splits(tmp_path, temp):
    entries = {}
    for split, count in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(count):
                entries[f"pets/{split}/{cls}/{i}.png"] = _png(len(entries))[0]
    task = task_from_zip(_zip(tmp_path / "pets.zip", entries))
    assert task.classnames == ("cat", "dog")
    train, test = task.dataset("train"), task.dataset("test")
    assert sorted(train["label"]) == [0, 0, 0, 1, 1, 1] and sorted(test["label"]) == [0, 0, 1, 1]
    assert train[0]["image"].size == (8, 8)
    with pytest.raises(TaskError, match="no 'validation' folder in 'pets.zip'"):
        task.dataset("validation")
    assert list(temp.iterdir()) == []


def test_zip_declaring_1gib_is_refused_at_once(tmp_path, temp):
    entries, _ = _pets()
    path = _zip(tmp_path / "bomb.zip", entries)
    _patch(path, "pets/cat/0.png", file_size=2**30)  # a 1 KiB zip that claims 1 GiB
    start = time.perf_counter()
    message = _refused(temp, "more than this accepts", task_from_zip, path)
    assert time.perf_counter() - start < 1.0
    assert "1.0 GiB" in message and "'bomb.zip'" in message and "256 MiB" in message


@pytest.mark.parametrize("where", ["overall", "one member"])
def test_zip_of_zeros_is_refused_by_its_compression_ratio(tmp_path, temp, where):
    entries, _ = _pets()
    entries["pets/cat/zeros.bmp"] = bytes((32 if where == "overall" else 2) * 2**20)
    if where == "one member":  # 3 MiB that do not compress keep the archive's overall ratio low
        entries["pets/cat/noise.bmp"] = np.random.default_rng(0).bytes(3 * 2**20)
    path = _zip(tmp_path / "zeros.zip", entries)
    message = _refused(temp, r"compressed \d+:1.*more than the 100:1", task_from_zip, path)
    assert ("overall" in message) == (where == "overall")
    if where == "one member":
        assert "'pets/cat/zeros.bmp'" in message


@pytest.mark.parametrize("lie", ["bad crc", "declares less", "declares more", "garbled data"])
def test_zip_that_lies_or_is_damaged_is_refused_as_such(tmp_path, temp, lie):
    entries, _ = _pets()
    path = _zip(tmp_path / "pets.zip", entries)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("pets/hot_dog/1.png")
    if lie == "bad crc":
        _patch(path, info.filename, crc=info.CRC ^ 0xFFFF)
    elif lie == "declares less":
        _patch(path, info.filename, file_size=info.file_size - 50)
    elif lie == "declares more":
        _patch(path, info.filename, file_size=info.file_size + 100)
    else:
        data = bytearray(path.read_bytes())
        start = info.header_offset + 30 + len(info.filename)
        data[start: start + 16] = b"\xff" * 16
        path.write_bytes(bytes(data))
    message = _refused(temp, "'pets.zip' is damaged or lies about its sizes", task_from_zip, path)
    assert "'pets/hot_dog/1.png'" in message and "Re-create the zip" in message


def test_zip_with_too_many_images_is_refused(tmp_path, temp):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(TASK_MAX_FILES + 1):
            archive.writestr(f"many/c{i % 2}/{i}.png", b"")
    _refused(temp, r"20,001 images.*more than this accepts \(20,000 images", task_from_zip, path)
    small, _ = _pets()
    _refused(temp, r"5 images.*\(4 images", task_from_zip, _zip(tmp_path / "pets.zip", small), max_files=4)


def test_zip_too_deep_is_refused(tmp_path, temp):
    deep = "/".join("abcdefgh"[:TASK_MAX_DEPTH]) + "/"  # 8 wrapping folders, then the class: 9 levels
    entries, _ = _pets(top=deep)
    _refused(temp, "9 folders deep, more than the 8", task_from_zip, _zip(tmp_path / "deep.zip", entries))
    entries, _ = _pets(top=deep[2:])  # 7 wrapping folders: 8 levels, allowed
    task = task_from_zip(_zip(tmp_path / "ok.zip", entries))
    assert task.classnames == ("cat", "hot dog") and len(task.dataset()) == 5


def test_one_class_folder_is_refused_clearly(tmp_path, temp):
    message = "has only one class folder \\('cat'\\); a task needs at least two classes, one folder each"
    one = {"pets/cat/0.png": _png(0)[0], "pets/cat/1.png": _png(1)[0]}
    _refused(temp, "'pets.zip' " + message, task_from_zip, _zip(tmp_path / "pets.zip", one))
    (tmp_path / "pets" / "cat").mkdir(parents=True)
    for name, data in one.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(TaskError, match="'pets' " + message):
        task_from_folder(tmp_path / "pets")


def test_non_image_named_png_is_refused_naming_the_entry(tmp_path, temp):
    entries, _ = _pets(top="")
    entries["cat/3.png"] = b"this is not a png"
    message = _refused(temp, "is not an image this app can read", task_from_zip, _zip(tmp_path / "pets.zip", entries))
    assert message.startswith("'pets.zip' entry 'cat/3.png' is not an image this app can read")


def test_other_zip_refusals_name_the_file_only(tmp_path, temp):
    entries, _ = _pets()
    path = _zip(tmp_path / "bz.zip", entries, compression=zipfile.ZIP_BZIP2)  # bzip2 inflates unbounded per read
    _refused(temp, "'bz.zip' entry .* uses a compression this app does not read", task_from_zip, path)
    path = _zip(tmp_path / "locked.zip", entries)
    _patch(path, "pets/cat/0.png", flag_bits=1)
    _refused(temp, "'locked.zip' is password-protected", task_from_zip, path)
    inner = _zip(tmp_path / "inner.zip", entries).read_bytes()
    _refused(temp, r"holds no images \(zips inside the zip are not opened\)", task_from_zip,
             _zip(tmp_path / "nested.zip", {"pets.zip": inner}))
    stray = {**entries, "pets/loose.png": _png(9)[0]}
    _refused(temp, "image outside a class folder \\('pets/loose.png'\\)", task_from_zip,
             _zip(tmp_path / "stray.zip", stray))
    _refused(temp, r"'stray.zip' is \d KiB: more than this accepts for a task \(1000 bytes\)", task_from_zip,
             tmp_path / "stray.zip", max_bytes=1000)


def _parquet_file(path, images: list, labels: list[int], names=("no", "yes")):
    """A parquet file as datasets writes it (its features in the schema), images given as {bytes, path} dicts."""
    features = datasets.Features({"img": datasets.Image(), "target": datasets.ClassLabel(names=list(names))})
    table = pa.Table.from_pydict({"img": images, "target": labels}, schema=features.arrow_schema)
    pq.write_table(table, path)
    return path


def test_good_parquet_loads_in_memory(tmp_path, temp):
    images = [_png(i) for i in range(4)]
    path = _parquet_file(tmp_path / "yesno.parquet", [{"bytes": b, "path": None} for b, _ in images], [0, 1, 1, 0])
    task = task_from_parquet(path)
    assert task.name == "yesno" and task.classnames == ("no", "yes")
    data = task.dataset()
    assert data.column_names == ["image", "label"] and data.cache_files == [], "read into memory, no cache files"
    assert data["label"] == [0, 1, 1, 0]
    assert [np.asarray(im).tobytes() for im in data["image"]] == [p.tobytes() for _, p in images]
    assert list(temp.iterdir()) == []


def test_parquet_over_the_limits_is_refused(tmp_path, temp):
    images = [{"bytes": _png(i)[0], "path": None} for i in range(4)]
    path = _parquet_file(tmp_path / "yesno.parquet", images, [0, 1, 1, 0])
    _refused(temp, r"'yesno.parquet' unpacks to 4 rows.*more than this accepts \(3 rows", task_from_parquet, path,
             max_files=3)
    _refused(temp, "'yesno.parquet' is .*: more than this accepts", task_from_parquet, path, max_bytes=1000)


def test_unreadable_or_unsafe_parquet_is_refused(tmp_path, temp):
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 this is not parquet")
    _refused(temp, "'junk.parquet' is not a parquet file this app can read", task_from_parquet,
             tmp_path / "junk.parquet")
    secret = tmp_path / "server-secret.png"
    secret.write_bytes(_png(0)[0])
    good = {"bytes": _png(1)[0], "path": None}
    by_path = _parquet_file(tmp_path / "paths.parquet", [good, {"bytes": None, "path": str(secret)}], [0, 1])
    _refused(temp, "'paths.parquet' row 1 holds no image bytes", task_from_parquet, by_path)
    junk = _parquet_file(tmp_path / "notimg.parquet", [good, {"bytes": b"nope", "path": None}], [0, 1])
    _refused(temp, "'notimg.parquet' row 1 is not an image this app can read", task_from_parquet, junk)
    one = _parquet_file(tmp_path / "one.parquet", [good, good], [0, 0], names=("only",))
    _refused(temp, "'one.parquet' has only 1 class", task_from_parquet, one)
