"""Reading MovieLens-100K into three typed Arrow tables.

Two on-disk layouts are understood, each as a folder or a zip (files may sit one folder deep):

* official GroupLens ``ml-100k``: ``u.data`` (tab: user item rating timestamp), ``u.user``
  (``id|age|gender|occupation|zip``), ``u.item`` (latin-1, ``id|title (year)|release date|
  video release|url|19 genre flags``) and optionally ``u.genre``;
* RecBole atomic files: ``ml-100k.inter`` / ``.user`` / ``.item``, tab-separated with typed
  headers such as ``user_id:token``.

With no source, the cache folder is used, filled on first use from the copy of the data set
that ships inside the ``recbole==1.2.1`` wheel (fetched with ``pip download``).
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from recstack.datasets._files import cache_dir

GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_MEMBER_PREFIX = "recbole/dataset_example/ml-100k/"
OFFICIAL_FILES = ("u.data", "u.user", "u.item")
RECBOLE_FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")

RATINGS_SCHEMA = pa.schema(
    [("user_id", pa.int64()), ("item_id", pa.int64()), ("rating", pa.float32()), ("timestamp", pa.int64())]
)
USERS_SCHEMA = pa.schema(
    [("user_id", pa.int64()), ("age", pa.int64()), ("gender", pa.string()),
     ("occupation", pa.string()), ("zip_code", pa.string())]
)  # fmt: skip
ITEMS_SCHEMA = pa.schema(
    [("item_id", pa.int64()), ("title", pa.string()), ("release_year", pa.int64()),
     ("genres", pa.list_(pa.string()))]
)  # fmt: skip


@dataclass(frozen=True)
class MovieLensRaw:
    """The three MovieLens-100K tables, typed as ``RATINGS_SCHEMA``/``USERS_SCHEMA``/``ITEMS_SCHEMA``.

    ``items.title`` has the trailing `` (year)`` removed; ``release_year`` is null when unknown.
    """

    ratings: pa.Table
    users: pa.Table
    items: pa.Table
    source: str


class _Source:
    """Byte access to named files in a folder or zip, looking at most one folder deep."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"MovieLens-100K source not found: {path}")
        self.path = path
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = [name for name in archive.namelist() if not name.endswith("/")]
            self._members = {name.rsplit("/", 1)[-1]: name for name in members if name.count("/") <= 1}
        else:
            # one folder deep first, so a file at the top level wins
            files = [*sorted(path.glob("*/*")), *sorted(path.glob("*"))]
            self._members = {file.name: str(file) for file in files if file.is_file()}

    def has(self, name: str) -> bool:
        return name in self._members

    def read(self, name: str, layout: str) -> bytes:
        if name not in self._members:
            raise FileNotFoundError(f"{self.path}: missing {name} ({layout} MovieLens-100K layout)")
        if zipfile.is_zipfile(self.path):
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self._members[name])
        return Path(self._members[name]).read_bytes()


def load_raw(source: str | Path | None = None) -> MovieLensRaw:
    """Read MovieLens-100K from a folder or zip in either layout (see the module docstring).

    Args:
        source: folder or zip; None uses (and on first use fills) ``<cache>/ml-100k``.

    Raises:
        FileNotFoundError: the source, or one of the files its layout needs, is missing.
    """
    path = Path(source).expanduser() if source is not None else default_source()
    files = _Source(path)
    if files.has("u.data"):
        return _read_official(files)
    if files.has("ml-100k.inter"):
        return _read_recbole(files)
    raise FileNotFoundError(
        f"{path}: no MovieLens-100K files; expected u.data (official layout) or ml-100k.inter (RecBole layout)"
    )


def default_source() -> Path:
    """``<cache>/ml-100k``, downloading RecBole's copy into it when it holds no data yet."""
    folder = cache_dir() / "ml-100k"
    if not any((folder / name).is_file() for name in (OFFICIAL_FILES[0], RECBOLE_FILES[0])):
        fetch_recbole_copy(folder)
    return folder


def fetch_recbole_copy(dest: Path) -> Path:
    """Extract ``recbole/dataset_example/ml-100k/*`` from the recbole wheel into ``dest``."""
    print(
        f"recstack: MovieLens-100K not in {dest}; fetching the copy inside the {RECBOLE_WHEEL} "
        "wheel from the package index (pip download --no-deps)",
        file=sys.stderr,
    )
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", RECBOLE_WHEEL, "-d", tmp]
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download {RECBOLE_WHEEL} to get MovieLens-100K ({' '.join(command)}):\n"
                f"{result.stdout[-2000:]}\nPass source= a local ml-100k folder or zip instead."
            )
        with zipfile.ZipFile(wheels[0]) as archive:
            for member in archive.namelist():
                if member.startswith(RECBOLE_MEMBER_PREFIX) and not member.endswith("/"):
                    partial = dest / (member.rsplit("/", 1)[-1] + ".partial")
                    partial.write_bytes(archive.read(member))
                    partial.replace(partial.with_suffix(""))  # atomic: no half-written data file
    print(f"recstack: MovieLens-100K saved to {dest}", file=sys.stderr)
    return dest


def _read_official(files: _Source) -> MovieLensRaw:
    layout = "official"
    ratings = _csv(files.read("u.data", layout), "\t", RATINGS_SCHEMA.names, RATINGS_SCHEMA)
    users = _csv(files.read("u.user", layout), "|", USERS_SCHEMA.names, USERS_SCHEMA)
    flag_names = [f"genre_{index}" for index in range(len(GENRES))]
    item_columns = ["item_id", "title", "release_date", "video_release_date", "url", *flag_names]
    item_types = {"item_id": pa.int64(), **{name: pa.string() for name in item_columns[1:5]}}
    item_types.update({name: pa.int8() for name in flag_names})
    raw_items = _csv(files.read("u.item", layout), "|", item_columns, item_types, encoding="latin-1")
    genre_names = _official_genres(files)
    flags = np.stack([raw_items[name].to_numpy(zero_copy_only=False) for name in flag_names], axis=1)
    title = raw_items["title"]
    release_year = pc.coalesce(_year(pc.utf8_slice_codeunits(raw_items["release_date"], -4)), _title_year(title))
    items = pa.table(
        {
            "item_id": raw_items["item_id"],
            "title": pc.utf8_trim_whitespace(pc.replace_substring_regex(title, r"\s*\(\d{4}\)\s*$", "")),
            "release_year": release_year,
            "genres": _lists_from_flags(flags, genre_names),
        },
        schema=ITEMS_SCHEMA,
    )
    return MovieLensRaw(ratings=ratings, users=users, items=items, source=str(files.path))


def _read_recbole(files: _Source) -> MovieLensRaw:
    layout = "RecBole"
    ratings = _atomic(files.read("ml-100k.inter", layout), {"rating": pa.float32(), "timestamp": pa.float64()})
    ratings = pa.table(
        {name: ratings[name].cast(RATINGS_SCHEMA.field(name).type) for name in RATINGS_SCHEMA.names},
        schema=RATINGS_SCHEMA,
    )
    users = _atomic(files.read("ml-100k.user", layout), dict(zip(USERS_SCHEMA.names, USERS_SCHEMA.types)))
    users = users.select(USERS_SCHEMA.names).cast(USERS_SCHEMA)
    raw_items = _atomic(files.read("ml-100k.item", layout), {"item_id": pa.int64()})
    items = pa.table(
        {
            "item_id": raw_items["item_id"],
            "title": raw_items["movie_title"],
            "release_year": _year(raw_items["release_year"]),
            "genres": _split_genres(raw_items["class"]),
        },
        schema=ITEMS_SCHEMA,
    )
    return MovieLensRaw(ratings=ratings, users=users, items=items, source=str(files.path))


def _csv(
    data: bytes,
    delimiter: str,
    names: list[str],
    types: pa.Schema | dict[str, pa.DataType],
    *,
    encoding: str = "utf8",
    skip_rows: int = 0,
) -> pa.Table:
    column_types = dict(zip(types.names, types.types)) if isinstance(types, pa.Schema) else types
    return pv.read_csv(
        io.BytesIO(data),
        read_options=pv.ReadOptions(column_names=names, encoding=encoding, skip_rows=skip_rows),
        parse_options=pv.ParseOptions(delimiter=delimiter, quote_char=False),
        convert_options=pv.ConvertOptions(column_types=column_types, strings_can_be_null=False),
    )


def _atomic(data: bytes, types: dict[str, pa.DataType]) -> pa.Table:
    """A RecBole atomic file: the header ``name:type`` fields lose their ``:type``."""
    header = data.split(b"\n", 1)[0].decode("utf8").rstrip("\r")
    names = [field.split(":", 1)[0] for field in header.split("\t")]
    string_default = {name: pa.string() for name in names}
    return _csv(data, "\t", names, {**string_default, **types}, skip_rows=1)


def _official_genres(files: _Source) -> tuple[str, ...]:
    if not files.has("u.genre"):
        return GENRES
    table = _csv(files.read("u.genre", "official"), "|", ["name", "index"], {"name": pa.string(), "index": pa.int64()})
    names = np.asarray(table["name"].to_pylist(), dtype=object)[np.argsort(table["index"].to_numpy())]
    return tuple(names) if len(names) == len(GENRES) else GENRES


def _year(text: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Four-digit years as int64; anything else (``"unkonwn"``, empty) becomes null."""
    valid = pc.match_substring_regex(text, r"^\d{4}$")
    return pc.if_else(valid, text, pa.scalar(None, pa.string())).cast(pa.int64())


def _title_year(title: pa.ChunkedArray) -> pa.Array:
    year = pc.extract_regex(title, r"\((?P<year>\d{4})\)\s*$")
    return _year(pc.struct_field(year, [0]))


def _lists_from_flags(flags: np.ndarray, names: tuple[str, ...]) -> pa.ListArray:
    """0/1 matrix ``(N, G)`` to list<string> of the set genres, in genre order."""
    rows, columns = np.nonzero(flags)  # row-major, so each row's genres come out in order
    offsets = np.zeros(len(flags) + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=len(flags)), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.asarray(names, dtype=object)[columns], pa.string()))


def _split_genres(text: pa.ChunkedArray) -> pa.ListArray:
    """Space-separated genres to list<string>, dropping empty pieces (so "" gives [])."""
    pieces = pc.split_pattern(pc.fill_null(text, ""), " ").combine_chunks()
    values = pc.list_flatten(pieces)
    keep = pc.not_equal(values, "").to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(pieces).to_numpy()[keep]
    offsets = np.zeros(len(pieces) + 1, dtype=np.int32)
    np.cumsum(np.bincount(parents, minlength=len(pieces)), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values.filter(pa.array(keep)))
