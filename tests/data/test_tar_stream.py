"""clip_jax.data.tar_stream against the standard library's tarfile (the oracle) on the
archives writers produce: PAX (webdataset's and clip_jax's writers), GNU long names, ustar
name prefixes, non-file entries, empty and large members, compressed shards; and damage."""
import bz2
import gzip
import io
import lzma
import os
import tarfile

import numpy as np
import pytest

from clip_jax.data import tar_stream

ENTRIES = [
    ("000.jpg", 1000, "file"),
    ("000.txt", 17, "file"),
    ("folder", 0, "dir"),
    ("link", 0, "symlink"),
    ("deep/" + "directory/" * 12 + "001.jpg", 513, "file"),  # > 100 bytes: prefix, long name or PAX path
    ("001.txt", 0, "file"),
    ("ünïcode/002.json", 512, "file"),
    ("002.cls", 3, "file"),
]


def archive(fmt: int, float_mtime: bool = True) -> bytes:
    rs = np.random.RandomState(fmt)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, size, kind in ENTRIES:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000.25 if float_mtime and fmt == tarfile.PAX_FORMAT else 1_700_000_000
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "x" * 120
                tar.addfile(info)
            else:
                info.size = size
                tar.addfile(info, io.BytesIO(rs.bytes(size)))
    return out.getvalue()


def expected(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


FORMATS = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("compress", [None, gzip.compress, bz2.compress, lzma.compress])
def test_members_equal_tarfile(fmt, compress):
    data = archive(FORMATS[fmt])
    if compress:
        data = compress(data)
    want = expected(data)
    assert len(want) == 6 and any(len(name) > 100 for name, _ in want)
    assert list(tar_stream.members(io.BytesIO(data))) == want


def test_ustar_prefix_names_and_skipped_members():
    entries = [("a/" * 60 + "x.cls", b"7"), ("a/" * 60 + "x.jpg", b"\xff" * 2000), ("y.cls", b"12")]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in entries:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    data = out.getvalue()
    assert list(tar_stream.members(io.BytesIO(data))) == expected(data) == entries
    only_labels = list(tar_stream.members(io.BytesIO(data), wanted=lambda name: name.endswith(".cls")))
    assert only_labels == [(entries[0][0], b"7"), (entries[1][0], None), ("y.cls", b"12")]


def test_damage_raises_after_the_good_members():
    data = archive(tarfile.PAX_FORMAT)
    good = expected(data)
    # Cut inside the data of the deep member: the two members before it come out first.
    cut = data.index(good[2][1][:64]) + 100
    got = []
    with pytest.raises(tarfile.ReadError, match="unexpected end"):
        for member in tar_stream.members(io.BytesIO(data[:cut])):
            got.append(member)
    assert got == good[:2]
    # Skipping (not reading) a member that runs past the end is damage too.
    with pytest.raises(tarfile.ReadError, match="unexpected end"):
        list(tar_stream.members(io.BytesIO(data[:cut]), wanted=lambda name: False))
    with pytest.raises(tarfile.ReadError, match="unexpected end"):  # in the padding of the PAX record
        list(tar_stream.members(io.BytesIO(data[:700])))
    with pytest.raises(tarfile.ReadError, match="truncated tar header"):
        list(tar_stream.members(io.BytesIO(data[: 2 * tar_stream.BLOCK + 200])))  # in the first ustar header
    with pytest.raises(tarfile.ReadError, match="checksum"):
        list(tar_stream.members(io.BytesIO(os.urandom(3000))))
    flipped = bytearray(data)
    flipped[10] ^= 0x01  # a byte of the first header's name
    with pytest.raises(tarfile.ReadError, match="checksum"):
        list(tar_stream.members(io.BytesIO(bytes(flipped))))
    with pytest.raises(EOFError):
        list(tar_stream.members(io.BytesIO(gzip.compress(data)[:-2000])))


def test_end_of_archive():
    data = archive(tarfile.PAX_FORMAT)
    assert list(tar_stream.members(io.BytesIO(b""))) == []
    # Trailing garbage after the end-of-archive blocks is never read.
    assert list(tar_stream.members(io.BytesIO(data + os.urandom(1000)))) == expected(data)
