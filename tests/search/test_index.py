"""clip_jax.search's Index: known answers on a generated folder, incremental updates, bad
files, the on-disk format read without clip_jax, the model-mismatch refusal, and each fast
path (sharded batches, chunked exact search, the ANN index) against the plain computation."""
import os
import shutil
import sqlite3

import numpy as np
import pytest
from PIL import Image

import clip_jax
from clip_jax.search import Index, IndexBusyError, ModelMismatchError, SearchIndexError
from clip_jax.search.ann import AnnIndex
from clip_jax.search.encoder import Encoder, fingerprint, normalise
from clip_jax.search.exact import ExactSearch
from clip_jax.search.files import open_upright, read_for_model, walk
from tests.helpers.search import (
    CLASSES,
    corrupt_files,
    draw,
    exif_rotated,
    odd_files,
    random_checkpoint,
    save,
    shapes_folder,
    trained_checkpoint,
)


@pytest.fixture(scope="module")
def checkpoint():
    return trained_checkpoint()


@pytest.fixture(scope="module")
def built(tmp_path_factory, checkpoint):
    """(index folder, image folder, {path: class}) of the shapes folder plus odd and broken files."""
    base = tmp_path_factory.mktemp("search")
    root = str(base / "photos")
    labels = shapes_folder(root)
    odd_files(root)
    corrupt_files(root, os.path.join(root, next(p for p in labels if p.endswith(".jpg"))))
    index = Index.build(root, str(base / "index"), checkpoint, chunk_size=64, batch_size=32, progress=False)
    index.close()
    return str(base / "index"), root, labels


def test_text_queries_find_their_shapes(built):
    index_path, _, labels = built
    with Index.open(index_path) as index:  # the model comes from the manifest
        assert len(index) == len(labels) + 4  # the shapes and the 4 odd-mode images
        precision = {}
        for label in CLASSES:
            hits = index.search(f"a {label}", k=10)
            assert labels.get(hits[0].path) == label, (label, hits[0])
            precision[label] = np.mean([labels.get(h.path) == label for h in hits])
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert np.mean(list(precision.values())) >= 0.85, precision


def test_query_by_image_and_combination(built, tmp_path):
    index_path, root, labels = built
    with Index.open(index_path) as index:
        target = next(p for p, label in labels.items() if label == "green triangle" and p.endswith(".png"))
        copy = shutil.copy(os.path.join(root, target), tmp_path / "query.png")
        hits = index.search(image=str(copy), k=3)
        assert hits[0].path == target and hits[0].score == pytest.approx(1.0, abs=2e-3)
        # By id: the stored vector.  Equal to the query by file up to float16 storage.
        by_id = index.search(image=hits[0].id, k=3)
        assert by_id[0].path == target
        # Image + text: the normalised sum of the normalised parts.
        image_vector = index.embed_image(str(copy))
        text_vector = index.embed_text("a blue circle")
        combined = index.query_vector(image=str(copy), plus="a blue circle")
        np.testing.assert_allclose(combined, normalise(image_vector + text_vector), atol=1e-6)
        mixed = index.search(image=str(copy), plus="a blue circle", k=1)
        by_vector = index.search(vector=image_vector + text_vector, k=1)
        assert [h.path for h in mixed] == [h.path for h in by_vector]
        assert mixed[0].score == pytest.approx(by_vector[0].score, abs=1e-6)  # the same vector, up to rounding
        # Prompt ensembling: the mean of the normalised prompt embeddings, renormalised.
        templates = ["a photo of {}.", "{}"]
        parts = index.embed_text(["a photo of a red square.", "a red square"])
        np.testing.assert_allclose(index.embed_text("a red square", templates), normalise(parts.mean(0)), atol=1e-6)
        with pytest.raises(ValueError, match="nothing to search for"):
            index.search()
        with pytest.raises(ValueError, match="dimensions"):
            index.search(vector=np.ones(7))


def test_exact_search_equals_numpy_and_ann_agrees(built):
    index_path, _, _ = built
    with Index.open(index_path) as index:
        queries = index.embed_text([f"a {label}" for label in CLASSES])
        scores = queries @ index.vectors.astype(np.float32).T
        for q, hits in enumerate(index.search_vectors(queries, k=15, method="exact")):
            order = np.lexsort((np.arange(len(index)), -scores[q]))[:15]
            assert [h.id for h in hits] == list(index.ids[order])
            np.testing.assert_allclose([h.score for h in hits], scores[q, order], atol=1e-5)
        # Probing every cell makes IVF exact: the same hits as exact search.
        ann = index.ann_index()
        ann.nprobe = ann.nlist
        for exact, approx in zip(index.search_vectors(queries, k=10, method="exact"),
                                 index.search_vectors(queries, k=10, method="ann")):
            assert {h.id for h in exact} == {h.id for h in approx}


def test_exact_search_blocks_and_padding(rng):
    vectors = normalise(rng.randn(1000, 16)).astype(np.float16)
    queries = normalise(rng.randn(5, 16))
    plain = queries @ vectors.astype(np.float32).T
    for block_rows in (64, 333, 4096):  # several blocks with a padded last one; one block
        scores, rows = ExactSearch(vectors, block_rows=block_rows).search(queries, k=37)
        np.testing.assert_array_equal(rows, np.argsort(-plain, axis=1, kind="stable")[:, :37])
        np.testing.assert_allclose(scores, np.take_along_axis(plain, rows, axis=1), atol=1e-6)
    scores, rows = ExactSearch(vectors[:3]).search(queries, k=10)
    assert rows.shape == (5, 3)


def test_ann_recall_and_incremental_sync(rng):
    """On clustered vectors: recall@10 of the default probe count, and an index updated by
    sync (removals and additions) holds exactly what a fresh one would."""
    centres = normalise(rng.randn(50, 32))
    vectors = normalise(centres[rng.randint(0, 50, 4000)] + 0.35 * rng.randn(4000, 32) / np.sqrt(32))
    ids = np.arange(4000) * 3 + 7
    ann = AnnIndex.build(vectors.astype(np.float32), ids)
    queries = normalise(centres[rng.randint(0, 50, 50)] + 0.35 * rng.randn(50, 32) / np.sqrt(32))
    _, exact_rows = ExactSearch(vectors).search(queries, k=10)
    _, found = ann.search(queries, k=10)
    recall = np.mean([len(set(ids[e]) & set(f)) / 10 for e, f in zip(exact_rows, found)])
    assert recall >= 0.95, recall
    keep = rng.rand(4000) > 0.2
    new_ids = np.concatenate([ids[keep], 100_000 + np.arange(300)])
    new_vectors = np.concatenate([vectors[keep], normalise(rng.randn(300, 32))])
    added, removed = ann.sync(new_ids, new_vectors.astype(np.float32))
    assert (added, removed) == (300, int((~keep).sum()))
    np.testing.assert_array_equal(ann.ids(), np.sort(new_ids))
    ann.nprobe = ann.nlist
    _, rows = ExactSearch(new_vectors).search(queries, k=10)
    _, found = ann.search(queries, k=10)
    np.testing.assert_array_equal(np.sort(new_ids[rows], axis=1), np.sort(found, axis=1))


def test_corrupt_files_are_counted_not_fatal(built):
    index_path, _, _ = built
    with Index.open(index_path) as index:
        skipped = index.skipped()
        report = index.report()
    assert set(skipped) == {"broken/empty.jpg", "broken/truncated.jpg", "broken/text.jpg"}
    assert "empty" in skipped["broken/empty.jpg"]
    assert {s["path"] for s in report["skipped"]} == set(skipped)


def test_odd_images_and_exif_orientation(tmp_path):
    rng = np.random.default_rng(3)
    upright = draw("red triangle", rng, (60, 40))
    path = exif_rotated(str(tmp_path / "phone.jpg"), upright)
    with Image.open(path) as raw:
        assert raw.size == (40, 60)  # stored sideways
    shown = open_upright(path)
    assert shown.size == (60, 40)
    pixels, size = read_for_model(path, 32)
    assert size == (60, 40)
    np.testing.assert_allclose(pixels, clip_jax.preprocess(shown, 32))
    sideways = clip_jax.preprocess(Image.open(path), 32)
    assert np.abs(pixels - sideways).max() > 0.5  # orientation matters to what the model sees
    odd_files(str(tmp_path / "odd"))
    for name in ("grey.png", "palette.png", "alpha.png", "strip.jpg"):
        pixels, _ = read_for_model(str(tmp_path / "odd" / "odd" / name), 32)
        assert pixels.shape == (32, 32, 3) and np.isfinite(pixels).all()


def test_storage_is_readable_without_clip_jax(built):
    index_path, root, labels = built
    with Index.open(index_path) as index:
        expected = dict(zip(index.paths, index.vectors))
    db = sqlite3.connect(os.path.join(index_path, "images.sqlite"))
    rows = db.execute("SELECT images.path, chunks.file, images.row FROM images "
                      "JOIN chunks ON chunk = chunks.id").fetchall()
    assert len(rows) == len(expected)
    for path, file, row in rows:
        vector = np.load(os.path.join(index_path, "features", file))[row]
        assert vector.dtype == np.float16
        np.testing.assert_array_equal(vector, expected[path])
        assert abs(np.linalg.norm(vector.astype(np.float32)) - 1) < 2e-3
        assert os.path.exists(os.path.join(root, path))


def test_sharded_batches_equal_the_plain_encoder(checkpoint, built):
    """8 simulated devices, a padded partial batch: the same features as one unsharded call."""
    import jax

    assert jax.local_device_count() == 8
    model, variables = clip_jax.load_checkpoint(checkpoint)
    encoder = Encoder(model, variables, batch_size=12)  # rounded up to a multiple of 8 devices
    assert encoder.batch_size == 16
    _, root, labels = built
    images = np.stack([read_for_model(os.path.join(root, p), 32)[0] for p in sorted(labels)[:11]])
    plain = normalise(clip_jax.encode_image(model, variables, images))
    np.testing.assert_allclose(encoder.encode_images(images), plain, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_images(images[:3]), plain[:3], atol=1e-5)


def test_fingerprint_is_the_model_not_the_file(tmp_path, checkpoint):
    model, variables = clip_jax.load_checkpoint(checkpoint)
    other_format = clip_jax.export_checkpoint(model, variables, str(tmp_path / "m.safetensors"), "open_clip")
    _, reread = clip_jax.load_checkpoint(other_format)
    assert fingerprint(model.config, reread) == fingerprint(model.config, variables)
    changed = {"params": {**variables["params"], "logit_scale": variables["params"]["logit_scale"] + 1}}
    assert fingerprint(model.config, changed) != fingerprint(model.config, variables)


def test_model_mismatch_is_refused(built, tmp_path):
    index_path, root, _ = built
    other = random_checkpoint(str(tmp_path), seed=7)
    with pytest.raises(ModelMismatchError) as error:
        Index.open(index_path, other)
    message = str(error.value)
    assert other in message and "shapes.safetensors" in message and "cannot be mixed" in message
    with pytest.raises(ModelMismatchError):
        Index.build(root, index_path, other, progress=False)


def _rewrite(path: str, label: str, seed: int) -> None:
    ext = os.path.splitext(path)[1].lower()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP"}[ext]
    save(draw(label, np.random.default_rng(seed)), path, fmt)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # a visibly later mtime


def test_incremental_update_add_modify_delete(tmp_path, checkpoint):
    root = str(tmp_path / "photos")
    labels = shapes_folder(root, per_class=8, seed=5)
    index = Index.build(root, str(tmp_path / "index"), checkpoint, chunk_size=40, progress=False)
    before = dict(zip(index.paths, index.ids))
    vectors_before = dict(zip(index.paths, index.vectors))
    assert index.report()["embedded"] == len(labels)
    chunk_files = sorted(os.listdir(tmp_path / "index" / "features"))

    # Nothing changed: nothing embedded, nothing rewritten.
    report = index.update(progress=False)
    assert (report["embedded"], report["unchanged"], report["removed"]) == (0, len(labels), 0)
    assert sorted(os.listdir(tmp_path / "index" / "features")) == chunk_files

    red_circles = sorted(p for p, label in labels.items() if label == "red circle")
    modified, deleted = red_circles[0], red_circles[1]
    _rewrite(os.path.join(root, modified), "blue square", seed=11)
    os.unlink(os.path.join(root, deleted))
    added = "new/extra_yellow_triangle.png"
    save(draw("yellow triangle", np.random.default_rng(12)), os.path.join(root, added), "PNG")

    report = index.update(progress=False)
    assert (report["new"], report["changed"], report["removed"], report["embedded"]) == (1, 1, 1, 2)
    assert report["unchanged"] == len(labels) - 2
    assert deleted not in index.paths and added in index.paths
    after = dict(zip(index.paths, index.ids))
    assert after[modified] != before[modified]  # a changed file gets a new id
    for path in set(before) - {modified, deleted}:
        assert after[path] == before[path]
        np.testing.assert_array_equal(dict(zip(index.paths, index.vectors))[path], vectors_before[path])
    blue_squares = {p for p, label in labels.items() if label == "blue square"} | {modified}
    assert index.search("a blue square", k=1)[0].path in blue_squares
    hits = index.search(image=os.path.join(root, modified), k=1)
    assert hits[0].path == modified and hits[0].score > 0.99
    assert index.search(image=os.path.join(root, added), k=1)[0].path == added
    index.close()

    # The same index reopened from disk agrees.
    with Index.open(str(tmp_path / "index")) as reopened:
        assert dict(zip(reopened.paths, reopened.ids)) == after


def test_a_reader_sees_an_update_after_refresh(tmp_path, checkpoint):
    """A server's open index picks up what an update beside it committed."""
    root = str(tmp_path / "photos")
    shapes_folder(root, per_class=2, seed=9)
    Index.build(root, str(tmp_path / "index"), checkpoint, progress=False).close()
    with Index.open(str(tmp_path / "index")) as reader:
        count = len(reader)
        assert not reader.refresh()
        added = save(draw("green circle", np.random.default_rng(4)), os.path.join(root, "late.png"), "PNG")
        with Index.open(str(tmp_path / "index"), writable=True) as writer:
            writer.update(progress=False)
        assert reader.refresh() and len(reader) == count + 1
        assert reader.search(image=added, k=1)[0].path == "late.png"


def test_compaction_after_many_deletions(tmp_path, checkpoint):
    root = str(tmp_path / "photos")
    labels = shapes_folder(root, per_class=5, seed=6)
    index = Index.build(root, str(tmp_path / "index"), checkpoint, chunk_size=16, progress=False)
    kept = dict(zip(index.paths, index.vectors))
    for path in sorted(labels)[::2]:
        os.unlink(os.path.join(root, path))
        kept.pop(path)
    report = index.update(chunk_size=16, progress=False)
    assert report["compacted_rows"] == len(labels) - len(kept)
    assert index.store.dead_rows() == 0
    assert dict(zip(index.paths, map(tuple, index.vectors))) == {p: tuple(v) for p, v in kept.items()}
    files = os.listdir(tmp_path / "index" / "features")
    assert len(files) == -(-len(kept) // 16)
    index.close()


def test_walk_rules(tmp_path):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    save(draw("red circle", rng), str(root / "a.JPG"), "JPEG")
    save(draw("red circle", rng), str(root / ".hidden" / "b.jpg"), "JPEG")
    save(draw("red circle", rng), str(root / ".c.png"), "PNG")
    save(draw("red circle", rng), str(root / "index" / "d.png"), "PNG")  # the index folder itself
    (root / "notes.txt").write_text("not an image name")
    outside = save(draw("red circle", rng), str(tmp_path / "elsewhere.jpg"), "JPEG")
    os.symlink(outside, root / "link.jpg")
    os.symlink(root / "a.JPG", root / "inner_link.jpg")
    found, left_out = walk(str(root), exclude=str(root / "index"))
    assert [e.path for e in found] == ["a.JPG", "inner_link.jpg"]
    assert left_out == [("link.jpg", "symlink to a file outside the indexed folder")]


def test_errors_name_the_problem(tmp_path, checkpoint):
    with pytest.raises(NotADirectoryError, match="missing"):
        Index.build(str(tmp_path / "missing"), str(tmp_path / "index"), checkpoint)
    with pytest.raises(FileNotFoundError, match="not a search index"):
        Index.open(str(tmp_path))
    root = tmp_path / "photos"
    root.mkdir()
    with pytest.raises(ValueError, match="ann='sometimes'"):
        Index.create(str(root), str(tmp_path / "i2"), checkpoint, ann="sometimes")
    with pytest.raises(ValueError, match="float8"):
        Index.create(str(root), str(tmp_path / "i3"), checkpoint, dtype="float8")
    with Index.build(str(root), str(tmp_path / "i4"), checkpoint, progress=False) as empty:
        assert len(empty) == 0 and empty.search("anything") == []
        with pytest.raises(IndexBusyError, match="another process"):
            Index.open(str(tmp_path / "i4"), writable=True)
    with pytest.raises(SearchIndexError, match="indexes .*photos, not"):
        Index.build(str(tmp_path), str(tmp_path / "i4"), checkpoint, progress=False)
