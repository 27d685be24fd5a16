"""Feature extraction: sharding over (simulated) devices, host merge order, the disk cache."""
import numpy as np
import pytest

import clip_jax
from clip_jax import data
from clip_jax.evaluation import features as features_lib
from tests.helpers.evaluation import folder_dataset, retrieval_dataset


@pytest.fixture(scope="module")
def tiny():
    model = clip_jax.create_model("tiny-vit")
    return model, clip_jax.init_variables(model, 0)


def test_extract_matches_direct_encoding(tiny, tmp_path):
    model, variables = tiny
    spec = folder_dataset(str(tmp_path / "d"), classes=3, per_class=7)
    # batch 8 with 21 examples: padding rows in the last batch; sharded over the 8 test devices
    feats = features_lib.extract(model, variables, data.eval_batches(spec, batch_size=8, image_size=32), project=False)
    batches = list(data.eval_batches(spec, batch_size=32, image_size=32))
    images, labels = batches[0]["images"][:21], batches[0]["labels"][:21]
    direct = np.asarray(clip_jax.encode_image(model, variables, images, project=False))
    assert feats.images.shape == (21, model.config.vision.width)
    np.testing.assert_allclose(feats.images, direct, atol=1e-5)
    np.testing.assert_array_equal(feats.labels, labels)


def test_text_features_per_caption(tiny, tmp_path):
    model, variables = tiny
    spec, rows = retrieval_dataset(str(tmp_path), images=5, captions=2)
    feats = features_lib.extract(model, variables, data.eval_batches(spec, batch_size=4, image_size=32), texts=True)
    assert feats.texts.shape == (5, 2, 32) and feats.text_mask.all()
    direct = np.asarray(clip_jax.encode_text(model, variables, clip_jax.tokenize(rows[3][1])))
    np.testing.assert_allclose(feats.texts[3], direct, atol=1e-5)


def test_merge_hosts_restores_dataset_order(tmp_path):
    spec = folder_dataset(str(tmp_path / "d"), classes=2, per_class=5)
    single = np.concatenate([b["images"][b["mask"]].mean((1, 2, 3))
                             for b in data.eval_batches(spec, batch_size=4, image_size=32)])
    per_host = []
    for host in range(3):
        batches = list(data.eval_batches(spec, batch_size=2, image_size=32, process_index=host, process_count=3))
        per_host.append((np.concatenate([b["images"].mean((1, 2, 3)) for b in batches]),
                         np.concatenate([b["mask"] for b in batches])))
    assert len({len(v) for v, _ in per_host}) == 1  # every host the same number of rows
    values = features_lib.merge_hosts(np.stack([v for v, _ in per_host]))
    mask = features_lib.merge_hosts(np.stack([m for _, m in per_host]))
    np.testing.assert_allclose(values[mask], single, atol=1e-6)


def test_cache_reuses_and_keys(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return features_lib.Features(images=np.ones((3, 4), np.float32), labels=np.arange(3, dtype=np.int32))

    key = features_lib.cache_key(checkpoint="c", data="folder:/x", image_size=32, project=True, texts=False)
    first = features_lib.cached(str(tmp_path), key, compute)
    again = features_lib.cached(str(tmp_path), key, compute)
    assert len(calls) == 1 and np.array_equal(first.images, again.images) and again.texts is None
    other = features_lib.cache_key(checkpoint="c", data="folder:/x", image_size=32, project=False, texts=False)
    features_lib.cached(str(tmp_path), other, compute)
    assert len(calls) == 2
    ckpt = tmp_path / "w"
    ckpt.mkdir()
    (ckpt / "a").write_text("1")
    before = features_lib.checkpoint_fingerprint(str(ckpt))
    (ckpt / "b").write_text("2")  # a new checkpoint in a workdir
    assert features_lib.checkpoint_fingerprint(str(ckpt)) != before


def test_equal_inputs_get_equal_features(tiny, tmp_path):
    """With texts (retrieval), each distinct caption is encoded once and a repeated image
    takes its first copy's features: equal inputs give bitwise-equal features, across
    batches. Every feature still equals plain per-item encoding."""
    from tests.helpers import realistic

    model, variables = tiny
    items = realistic.captioned_items(48, seed=1, duplicate_share=0.25)
    assert sum(i.duplicate_of is not None for i in items) >= 3 and realistic.describe(items)["uncaptioned"]
    spec = realistic.write_shards(str(tmp_path), items)
    feats = features_lib.extract(model, variables, data.eval_batches(spec, batch_size=8, image_size=32), texts=True,
                                 text_chunk=16)
    decoded = np.concatenate([b["images"][b["mask"]] for b in data.eval_batches(spec, batch_size=48, image_size=32)])
    np.testing.assert_allclose(feats.images, np.asarray(clip_jax.encode_image(model, variables, decoded)), atol=1e-5)
    first_caption = {}
    for i, item in enumerate(items):
        if item.duplicate_of is not None:
            np.testing.assert_array_equal(feats.images[i], feats.images[item.duplicate_of])
        assert feats.text_mask[i].sum() == len(item.captions)
        for j, caption in enumerate(item.captions):
            np.testing.assert_array_equal(feats.texts[i, j], feats.texts[first_caption.setdefault(caption, (i, j))])
            direct = clip_jax.encode_text(model, variables, clip_jax.tokenize([caption]))[0]
            np.testing.assert_allclose(feats.texts[i, j], np.asarray(direct), atol=1e-5)
