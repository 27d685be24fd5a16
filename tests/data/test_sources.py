"""Spec strings and each source kind on tiny data written by the tests, plus the data/ tools."""
import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from clip_jax import data
from clip_jax.data import dataset_spec as spec_lib
from clip_jax.data import sources
from tests.helpers.data import captioned_shards, jpeg, truncate, write_tar
from tests.helpers.runtime import load_file

build_wds = load_file("data/build_wds.py")
inspect_shards = load_file("data/inspect_shards.py")
make_demo_shards = load_file("data/make_demo_shards.py")


def read_all(spec):
    out = []
    for source in data.open_sources(spec):
        out += list(source.ordered().as_numpy_iterator())
    return out


# -- spec parsing -----------------------------------------------------------------------


def test_parse_kinds_options_weights():
    parsed = spec_lib.parse("demo:train?n=10@0.7+demo:val@0.3")
    assert [(s.kind, s.target, dict(s.options), s.weight) for s in parsed] == [
        ("demo", "train", {"n": "10"}, 0.7),
        ("demo", "val", {}, 0.3),
    ]
    # '+' inside a TFDS split is split arithmetic, not a mixture.
    (tfds_spec,) = spec_lib.parse("tfds:mnist:train+test")
    assert tfds_spec.target == "mnist:train+test"
    (gcs,) = spec_lib.parse("wds:gs://bucket/a-{000..009}.tar")
    assert gcs.target == "gs://bucket/a-{000..009}.tar"


def test_brace_expansion():
    assert spec_lib.expand_braces("a-{08..11}.tar") == ["a-08.tar", "a-09.tar", "a-10.tar", "a-11.tar"]
    assert spec_lib.expand_braces("{0..1}/{0..1}") == ["0/0", "0/1", "1/0", "1/1"]
    with pytest.raises(ValueError, match="backwards"):
        spec_lib.expand_braces("a-{5..1}.tar")


@pytest.mark.parametrize(
    "bad, message",
    [
        ("", "non-empty"),
        ("http://x/a.tar", "must start with one of"),
        ("/data/a.tar", "must start with one of"),
        ("wds:", "nothing after"),
        ("demo:train@0", "positive"),
        ("demo:train?n", "key=value"),
        ("demo:nope", "demo split must be one of"),
    ],
)
def test_bad_specs_are_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        data.open_sources(bad)


def test_missing_paths_are_errors_at_start(tmp_path):
    with pytest.raises(ValueError, match=r"do not exist.*shards-00001.tar"):
        spec = captioned_shards(str(tmp_path), 1, 2, prefix="shards")
        data.open_sources(spec.replace("{000..000}", "{00000..00001}"))
    with pytest.raises(ValueError, match="matches no file"):
        data.open_sources(f"tfrecord:{tmp_path}/*.tfrecord")
    with pytest.raises(ValueError, match="not a directory"):
        data.open_sources(f"folder:{tmp_path}/nope")
    with pytest.raises(ValueError, match="do not exist"):
        data.train_iterator(f"csv:{tmp_path}/x.csv", batch_size=2, image_size=8, seed=0)


# -- wds ----------------------------------------------------------------------------------


def test_wds_grouping_captions_labels_and_faults(tmp_path):
    good = jpeg()
    path = write_tar(str(tmp_path / "a.tar"), [
        ("dir/k0", {"jpg": good, "txt": b"a caption"}),
        ("k1", {"png": good, "json": json.dumps({"captions": ["one", " ", "two"]}).encode()}),
        ("k2", {"webp": good, "txt": b"\xff\xfe not utf-8", "cls": b"7"}),
        ("k3", {"txt": b"no image"}),
        ("k4", {"jpeg": b"", "txt": b"zero-byte image"}),
        ("k5", {"jpg": good, "txt": b"   "}),
    ])
    rows = read_all(f"wds:{path}")
    assert [r["captions"].tolist() for r in rows] == [
        [b"a caption"],
        [b"one", b"two"],
        [],
        [b"no image"],
        [b"zero-byte image"],
        [],
    ]
    assert [int(r["fault"]) for r in rows] == [0, 0, 0, sources.FAULT_IMAGE, sources.FAULT_IMAGE, 0]
    assert [int(r["label"]) for r in rows] == [-1, -1, 7, -1, -1, -1]
    assert rows[0]["image"] == good


def test_truncated_and_garbage_shards_yield_good_examples_then_a_fault(tmp_path):
    spec = captioned_shards(str(tmp_path), 1, 6)
    path = spec_lib.expand_braces(spec[4:])[0]
    truncate(path, 0.6)
    rows = read_all(f"wds:{path}")
    assert rows[-1]["fault"] == sources.FAULT_SHARD
    good = rows[:-1]
    assert 1 <= len(good) < 6 and all(r["fault"] == 0 for r in good)
    assert [r["captions"][0] for r in good] == [f"example {i}".encode() for i in range(len(good))]
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(os.urandom(3000))
    assert [int(r["fault"]) for r in read_all(f"wds:{garbage}")] == [sources.FAULT_SHARD]


def test_chunked_reading_keeps_elements_order_and_faults(tmp_path, monkeypatch):
    """Python readers hand tf.data chunks of READ_CHUNK elements; with chunks smaller than a
    shard, every element (several, one or no captions) comes out as the reader yields it, in
    order, and a broken shard still ends with its fault."""
    samples = []
    for i in range(10):
        fields = {"jpg": jpeg(seed=i)}
        if i % 3 == 0:
            fields["json"] = json.dumps({"captions": [f"first {i}", f"second {i}"]}).encode()
        elif i % 3 == 1:
            fields["txt"] = f"only {i}".encode()
        samples.append((f"{i:03d}", fields))
    write_tar(str(tmp_path / "a.tar"), samples)
    write_tar(str(tmp_path / "b.tar"), [(f"b{i}", {"jpg": jpeg(seed=i), "txt": b"x"}) for i in range(8)])
    truncate(str(tmp_path / "b.tar"), 0.6)
    (source,) = data.open_sources(f"wds:{tmp_path}/*.tar")
    expected = [element for unit in source.units for element in source._generate(unit)]
    monkeypatch.setattr(sources, "READ_CHUNK", 3)
    rows = list(source.ordered().as_numpy_iterator())
    assert len(rows) == len(expected) > 12 and expected[-1]["fault"] == sources.FAULT_SHARD
    assert [len(r["captions"]) for r in rows[:4]] == [2, 1, 0, 2]
    for row, want in zip(rows, expected):
        assert row["image"] == want["image"] and row["captions"].tolist() == want["captions"].tolist()
        assert (row["label"], row["fault"]) == (want["label"], want["fault"])


# -- tfrecord, folder, csv -------------------------------------------------------------


def _example(image, captions, label=None):
    feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}
    feature["caption"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=captions))
    if label is not None:
        feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_tfrecord_source_and_truncation(tmp_path):
    for name in ("a", "b"):
        with tf.io.TFRecordWriter(str(tmp_path / f"{name}.tfrecord")) as writer:
            for i in range(3):
                writer.write(_example(jpeg(seed=i), [f"{name}{i}".encode(), b"alt"], label=i))
    rows = read_all(f"tfrecord:{tmp_path}/*.tfrecord")
    assert [r["captions"].tolist() for r in rows] == [[f"{n}{i}".encode(), b"alt"] for n in "ab" for i in range(3)]
    assert [int(r["label"]) for r in rows] == [0, 1, 2] * 2
    truncate(str(tmp_path / "b.tfrecord"), 0.5)
    faults = [int(r["fault"]) for r in read_all(f"tfrecord:{tmp_path}/b.tfrecord")]
    assert faults[-1] == sources.FAULT_SHARD and all(f == 0 for f in faults[:-1])


def test_folder_source(tmp_path):
    for cls, n in (("dog", 2), ("cat", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            (tmp_path / cls / f"{i}.jpg").write_bytes(jpeg(seed=i))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    assert data.class_names(f"folder:{tmp_path}") == ["cat", "dog"]
    rows = read_all(f"folder:{tmp_path}")
    assert [int(r["label"]) for r in rows] == [0, 0, 0, 1, 1]
    assert all(r["captions"].size == 0 for r in rows)


def test_csv_source_columns_and_missing_files(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "0.jpg").write_bytes(jpeg())
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "title"])
        writer.writerow(["img/0.jpg", "a photo"])
        writer.writerow(["img/missing.jpg", "gone"])
    with pytest.raises(ValueError, match=r"no column 'image'.*\['filepath', 'title'\]"):
        data.open_sources(f"csv:{tmp_path}/pairs.csv")
    rows = read_all(f"csv:{tmp_path}/pairs.csv?image=filepath&caption=title")
    assert [(r["captions"].tolist(), int(r["fault"])) for r in rows] == [
        ([b"a photo"], 0),
        ([b"gone"], sources.FAULT_IMAGE),
    ]


# -- tfds (a tiny builder prepared locally: nothing is downloaded) ------------------------


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    tfds = pytest.importorskip("tensorflow_datasets")

    class TinyCaptionsForClipJax(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(None, None, 3)),
                        "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
                        "label": tfds.features.ClassLabel(names=["zero", "one", "two"]),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(7), "test": self._generate_examples(4)}

        def _generate_examples(self, n):
            for i in range(n):
                pixels = np.full((20, 30, 3), 10 * i, np.uint8)
                yield i, {"image": pixels, "captions": {"text": [f"cap {i}", f"alt {i}"]}, "label": i % 3}

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TinyCaptionsForClipJax(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_tfds_source(tiny_tfds):
    spec = f"tfds:tiny_captions_for_clip_jax:train[2:6]?data_dir={tiny_tfds}"
    rows = read_all(spec)
    # TFDS stores examples in its own (hashed) order: compare with what tfds itself reads.
    import tensorflow_datasets as tfds

    expected = list(
        tfds.load(
            "tiny_captions_for_clip_jax", split="train[2:6]", data_dir=tiny_tfds, shuffle_files=False
        ).as_numpy_iterator()
    )
    assert [r["captions"].tolist() for r in rows] == [e["captions"]["text"].tolist() for e in expected]
    assert [int(r["label"]) for r in rows] == [int(e["label"]) for e in expected]
    assert [tf.io.decode_png(r["image"]).numpy().tolist() for r in rows] == [e["image"].tolist() for e in expected]
    assert data.class_names(spec) == ["zero", "one", "two"]
    with pytest.raises(ValueError, match="no split 'nope'"):
        data.open_sources(f"tfds:tiny_captions_for_clip_jax:nope?data_dir={tiny_tfds}")
    with pytest.raises(ValueError, match="not prepared|no dataset"):
        data.open_sources(f"tfds:tiny_captions_for_clip_jax:train?data_dir={tiny_tfds}/empty")
    batches = list(data.eval_batches(spec, batch_size=3, image_size=16))
    labels = [int(e["label"]) for e in expected]
    assert [b["labels"].tolist() for b in batches] == [labels[:3], labels[3:] + [-1, -1]]
    assert [b["mask"].tolist() for b in batches] == [[True] * 3, [True, False, False]]


def test_build_wds_from_tfds_and_inspect(tiny_tfds, tmp_path):
    spec = build_wds.main(
        [
            "--from",
            f"tfds:tiny_captions_for_clip_jax:test?data_dir={tiny_tfds}",
            "--out",
            str(tmp_path / "t"),
            "--per-shard",
            "3",
        ]
    )
    assert spec == f"wds:{tmp_path}/t-{{00000..00001}}.tar"
    rows = read_all(spec)
    original = read_all(f"tfds:tiny_captions_for_clip_jax:test?data_dir={tiny_tfds}")
    assert [int(r["label"]) for r in rows] == [int(r["label"]) for r in original]
    assert [r["captions"].tolist() for r in rows] == [r["captions"].tolist() for r in original]
    assert [r["image"] for r in rows] == [r["image"] for r in original]
    assert (tmp_path / "classnames.txt").read_text().split() == ["zero", "one", "two"]
    report = inspect_shards.inspect(spec)
    assert report["examples"] == 4 and report["image_formats"] == {"png": 4} and report["distinct_labels"] == 3
    assert report["captions_per_example"]["mean"] == 2.0 and report["caption_tokens"]["max"] == 4  # SOT cap N EOT


# -- tools ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_build_wds_from_captions_file(tmp_path, fmt):
    (tmp_path / "im").mkdir()
    for i in range(5):
        (tmp_path / "im" / f"{i}.jpg").write_bytes(jpeg(seed=i))
    rows = [{"image": f"im/{i}.jpg", "caption": f"caption {i}"} for i in range(5)] + [
        {"image": "im/none.jpg", "caption": "x"}
    ]
    path = tmp_path / f"caps.{fmt}"
    if fmt == "csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, ["image", "caption"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = build_wds.main(["--captions", str(path), "--out", str(tmp_path / "out" / "s"), "--per-shard", "2"])
    got = read_all(spec)
    assert [r["captions"][0].decode() for r in got] == [f"caption {i}" for i in range(5)]
    assert got[3]["image"] == (tmp_path / "im" / "3.jpg").read_bytes()


def test_make_demo_shards_round_trip(tmp_path):
    spec = make_demo_shards.main(["--out", str(tmp_path), "--split", "heldout", "--n", "25", "--per-shard", "10"])
    from_shards = read_all(spec)
    on_the_fly = read_all("demo:heldout?n=25")
    assert len(from_shards) == len(on_the_fly) == 25
    for a, b in zip(from_shards, on_the_fly):
        assert (
            a["image"] == b["image"] and a["captions"].tolist() == b["captions"].tolist() and a["label"] == b["label"]
        )
