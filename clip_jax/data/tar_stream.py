"""The regular files of a tar stream, read in one pass: what WebDataset shards need.

`tarfile` builds a TarInfo per member from every header field and routes the PAX record
that webdataset's and clip_jax's writers put before each member (a fractional mtime)
through more Python objects; for shards of small images that was most of the Python
reader's time (bench/RESULTS.md).  A WebDataset reader needs only each file's name and
bytes, so this reads just those:

  - ustar, GNU and PAX headers; names from the ustar prefix, a PAX `path` record or a
    GNU long-name member; sizes in octal, base-256 or a PAX `size` record;
  - regular files are yielded; directories, links and other entries are skipped;
  - gzip, bzip2 and xz shards are decompressed on the fly (recognised by magic bytes).

Damage raises tarfile.ReadError (a header with a bad checksum, a malformed PAX record, a
stream that ends inside a header or a member), or the decompressor's error, so the caller
can keep what came before and report the shard.
An all-zero block ends the archive, as does the end of the stream at a header boundary.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
from typing import BinaryIO, Callable, Iterator

BLOCK = 512
_COMPRESSED = ((b"\x1f\x8b", gzip.GzipFile), (b"BZh", bz2.BZ2File), (b"\xfd7zXZ\x00", lzma.LZMAFile))
_REGULAR = (b"0", b"\x00", b"7")  # regular file, old-style regular file, contiguous file
_META = (b"x", b"g", b"L", b"K")  # PAX record (next member), PAX global record, GNU long name, GNU long link
_CHECKSUM = slice(148, 156)
# What reading a damaged stream raises: the tar layout and the decompressors (the caller adds
# its file system's errors).
READ_ERRORS = (tarfile.TarError, OSError, EOFError, lzma.LZMAError)


def members(f: BinaryIO, wanted: Callable[[str], bool] = lambda name: True) -> Iterator[tuple[str, bytes | None]]:
    """(name, data) of each regular file in the tar stream `f`, in order; data is None for
    names `wanted` rejects (their bytes are skipped, by seeking where `f` can)."""
    f = _decompressed(f)
    length = _length(f)
    long_name = pax_name = pax_size = None
    while True:
        header = f.read(BLOCK)
        if not header or header == bytes(BLOCK):
            return
        if len(header) < BLOCK:
            raise tarfile.ReadError(f"truncated tar header ({len(header)} of {BLOCK} bytes)")
        _check(header)
        kind = header[156:157]
        size = pax_size if pax_size is not None and kind not in _META else _size(header)
        if kind in _META:
            data = _read(f, size)
            if kind == b"x":
                records = _pax_records(data)
                pax_name = records.get("path", pax_name)
                pax_size = int(records["size"]) if "size" in records else pax_size
            elif kind == b"L":
                long_name = data.rstrip(b"\x00").decode("utf-8", "surrogateescape")
            continue
        name = pax_name or long_name or _ustar_name(header)
        long_name = pax_name = pax_size = None
        if kind in _REGULAR and wanted(name):
            yield name, _read(f, size)
        else:
            _skip(f, size, length)
            if kind in _REGULAR:
                yield name, None


def _decompressed(f: BinaryIO) -> BinaryIO:
    start = f.read(6)
    for magic, opener in _COMPRESSED:
        if start.startswith(magic):
            f.seek(0)
            return opener(fileobj=f) if opener is gzip.GzipFile else opener(f)
    f.seek(0)
    return f


def _check(header: bytes) -> None:
    stored = header[_CHECKSUM].split(b"\x00", 1)[0].strip()
    # The checksum is the sum of the header's bytes with its own field read as spaces.
    computed = sum(header) - sum(header[_CHECKSUM]) + 8 * 32
    try:
        ok = int(stored, 8) == computed
    except ValueError:
        ok = False
    if not ok:
        raise tarfile.ReadError(f"bad tar header checksum: {stored!r}, computed {computed:o}")


def _size(header: bytes) -> int:
    field = header[124:136]
    if field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\x00", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _ustar_name(header: bytes) -> str:
    name = header[:100].split(b"\x00", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\x00", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """PAX extended header records: "LENGTH key=value\\n", LENGTH counting the whole record."""
    records, at = {}, 0
    while at < len(data) and data[at] != 0:
        space = data.find(b" ", at)
        length = int(data[at:space]) if space > at and data[at:space].isdigit() else 0
        if length <= space - at:
            raise tarfile.ReadError(f"malformed PAX record at byte {at}: {data[at:at + 40]!r}")
        key, _, value = data[space + 1 : at + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        at += length
    return records


def _read(f: BinaryIO, size: int) -> bytes:
    padded = size + -size % BLOCK
    data = f.read(padded)  # with the padding to the next block: one read
    if len(data) < padded:
        raise tarfile.ReadError(f"unexpected end of tar data ({len(data)} of {padded} bytes)")
    return data[:size] if padded > size else data


def _skip(f: BinaryIO, size: int, length: int | None) -> None:
    """Move past a member of `size` bytes and its padding: a seek where the stream's `length`
    is known, else a read."""
    size += -size % BLOCK
    if length is None:
        if len(f.read(size)) < size:
            raise tarfile.ReadError("unexpected end of tar data")
        return
    end = f.tell() + size
    if end > length:
        raise tarfile.ReadError(f"unexpected end of tar data (a member runs to byte {end} of {length})")
    f.seek(end)


def _length(f: BinaryIO) -> int | None:
    """The stream's length where seeking to its end is cheap (a file, not a decompressor or a pipe)."""
    if isinstance(f, (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)) or not f.seekable():
        return None
    here = f.tell()
    f.seek(0, 2)
    end = f.tell()
    f.seek(here)
    return end
