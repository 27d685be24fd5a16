"""clip_jax.data: datasets named by spec strings, decoded and batched in tf.data.

    from clip_jax import data
    it = data.train_iterator("wds:/data/laion-{00000..00099}.tar", batch_size=256, image_size=224, seed=0)
    batch = next(it)                       # {"images": [256, 224, 224, 3] u8, "tokens": [256, 77] i32}
    # normalize_images (from clip_jax.preprocess) in the step; uint8_images=False: normalised f32 images;
    # train_transform="device": crop windows (WINDOW_KEYS), resized in the step by clip_jax.window_resize.crops
    state = it.get_state(); it.set_state(state)   # exact resume; it.stats() counts skipped faults
    for batch in data.eval_batches("folder:/data/val", batch_size=100, image_size=224): ...
    data.class_names("tfds:cifar10:test")

Modules: spec (spec strings), sources (one reader per kind; owns the fault codes),
image_ops and text_ops (in-graph decode, crops, tokenisation), pipeline (train and eval),
demo (synthetic data with held-out attribute combinations), wds_writer (writing shards, for data/ tools).
Spec syntax: see clip_jax.data.dataset_spec.
"""
from clip_jax.data.dataset_spec import parse as parse_spec
from clip_jax.data.pipeline import WINDOW_KEYS, TrainIterator, class_names, dataset_labels, eval_batches, train_iterator
from clip_jax.data.sources import open_sources
from clip_jax.preprocess import normalize_images

__all__ = [
    "WINDOW_KEYS", "TrainIterator", "class_names", "dataset_labels", "eval_batches", "normalize_images",
    "open_sources", "parse_spec", "train_iterator",
]
