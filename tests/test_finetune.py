"""Fine-tuning on labelled data (configs/finetune.py): each piece against its plain
computation.  FLYP's loss against NumPy with and without duplicate captions; the
zero-shot-initialised head against zero-shot classification at step 0; the LP-FT head
against scikit-learn; label smoothing against optax; layer-wise lr decay against plain
AdamW; the labelled pipeline on realistic data; and the bad inputs, before compiling."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import clip_jax
from clip_jax import classifier, losses
from clip_jax.evaluation.runner import run_evals
from clip_jax.optim import layer_scales, make_optimizer
from clip_jax.sharding import make_mesh
from clip_jax.train_config import base_config
from clip_jax.trainer import build, evaluate, initial_state
from tests.helpers import realistic
from tests.helpers.runtime import load_config
from tests.helpers.training import override

CLASSES = list(realistic.COLOURS)  # the class folders' names, one per colour


def numpy_flyp(image, text, scale, tokens):
    """The symmetric InfoNCE with pairs of identical captions left out of each other's
    negatives, in float64."""
    logits = scale * image.astype(np.float64) @ text.astype(np.float64).T
    same = (tokens[:, None, :] == tokens[None, :, :]).all(-1) & ~np.eye(len(tokens), dtype=bool)
    logits = np.where(same, -np.inf, logits)

    def ce(m):
        top = m.max(1, keepdims=True)
        lse = np.log(np.exp(m - top).sum(1)) + top[:, 0]
        return np.mean(lse - np.diag(m))

    return 0.5 * (ce(logits) + ce(logits.T))


def _batch(n=16, duplicates=True, seed=0):
    rs = np.random.RandomState(seed)
    tokens = rs.randint(1, 50, (n, 8)).astype(np.int32)
    if duplicates:  # three classes' captions repeated, as a fine-tuning batch has
        tokens[[3, 7, 12]] = tokens[5]
        tokens[[9, 15]] = tokens[1]
    image = rs.randn(n, 12).astype(np.float32)
    text = rs.randn(n, 12).astype(np.float32)
    # identical captions have identical text embeddings, as the text tower makes them
    for row in range(n):
        first = np.flatnonzero((tokens == tokens[row]).all(1))[0]
        text[row] = text[first]
    normalise = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return normalise(image), normalise(text), tokens


@pytest.mark.parametrize("duplicates", [False, True])
def test_flyp_loss_against_numpy_on_8_devices(duplicates):
    image, text, tokens = _batch(duplicates=duplicates)
    keys = losses.caption_keys(jnp.asarray(tokens))
    mesh = make_mesh([("data", -1), ("fsdp", 1)])
    expected = numpy_flyp(image, text, 10.0, tokens)
    gathered, _ = losses.loss_spec("flyp")(jnp.asarray(image), jnp.asarray(text), jnp.float32(10.0), mesh=mesh,
                                           keys=keys)
    dense, _ = losses.loss_spec("flyp_dense")(jnp.asarray(image), jnp.asarray(text), 10.0, keys=keys)
    np.testing.assert_allclose([float(gathered), float(dense)], [expected, expected], rtol=1e-5)
    plain, _ = losses.softmax_loss_dense(jnp.asarray(image), jnp.asarray(text), 10.0)
    if duplicates:
        assert abs(float(plain) - expected) > 1e-3  # the duplicates are what differs
    else:  # without duplicates FLYP is the trainer's contrastive loss on the built pairs
        np.testing.assert_allclose(float(gathered), float(plain), rtol=1e-6)


def test_flyp_is_well_posed_where_plain_softmax_is_not():
    """Perfect embeddings: FLYP's loss goes to 0; the plain loss stays above log 2 on the
    rows whose caption is shared (it would rank a text above itself)."""
    tokens = np.array([[1, 2], [1, 2], [3, 4], [5, 6]], np.int32)
    text = np.eye(4, dtype=np.float32)[[0, 0, 2, 3]]
    image = text.copy()
    keys = losses.caption_keys(jnp.asarray(tokens))
    flyp, _ = losses.softmax_loss_dense(jnp.asarray(image), jnp.asarray(text), 100.0, keys=keys)
    plain, _ = losses.softmax_loss_dense(jnp.asarray(image), jnp.asarray(text), 100.0)
    assert float(flyp) < 1e-6
    assert float(plain) > 0.5 * np.log(2)


def test_caption_keys_equal_exactly_for_equal_rows():
    rs = np.random.RandomState(1)
    tokens = rs.randint(0, 49408, (512, 77)).astype(np.int32)
    tokens[100] = tokens[7]
    keys = np.asarray(losses.caption_keys(jnp.asarray(tokens)))
    same = (keys[:, None, :] == keys[None, :, :]).all(-1)
    expected = (tokens[:, None, :] == tokens[None, :, :]).all(-1)
    np.testing.assert_array_equal(same, expected)


def test_label_smoothing_against_optax():
    rs = np.random.RandomState(0)
    logits, labels = rs.randn(10, 6).astype(np.float32), rs.randint(0, 6, 10)
    loss, metrics = classifier.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 0.1)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, 6), 0.1)
    np.testing.assert_allclose(float(loss), float(optax.softmax_cross_entropy(logits, targets).mean()), rtol=1e-6)
    assert float(metrics["accuracy"]) == pytest.approx(np.mean(logits.argmax(1) == labels))


def test_layer_decay_scales_each_block_against_plain_adamw():
    model = clip_jax.create_model("tiny-vit")
    params = clip_jax.init_variables(model, seed=0)["params"]
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.01, p.dtype), params)
    optim = base_config().optim
    optim.warmup_steps, optim.wd = 0, 0.1

    def first_update(decay):
        optim.layer_decay = decay
        optimizer, _ = make_optimizer(optim, params, 10)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return updates

    plain, decayed = first_update(1.0), first_update(0.5)
    layers = params["visual"]["transformer"]["blocks"]["mlp"]["c_fc"]["kernel"].shape[0]  # 2 in tiny-vit
    block = lambda u: np.asarray(u["visual"]["transformer"]["blocks"]["mlp"]["c_fc"]["kernel"])  # noqa: E731
    for layer in range(layers):
        np.testing.assert_allclose(block(decayed)[layer], block(plain)[layer] * 0.5 ** (layers - layer), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(decayed["visual"]["conv1"]["kernel"]),
                               np.asarray(plain["visual"]["conv1"]["kernel"]) * 0.5 ** (layers + 1), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(decayed["visual"]["proj"]), np.asarray(plain["visual"]["proj"]))
    np.testing.assert_array_equal(np.asarray(decayed["logit_scale"]), np.asarray(plain["logit_scale"]))
    scales = layer_scales(params, 0.5)
    assert float(scales["text"]["token_embedding"]) == 0.5 ** 3


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A realistic class folder (greyscale and palette PNGs, odd sizes, duplicate images)
    and a tiny checkpoint to fine-tune."""
    root = tmp_path_factory.mktemp("finetune")
    spec = realistic.class_folder(str(root / "train"), per_class=8)
    model = clip_jax.create_model("tiny-vit")
    variables = clip_jax.init_variables(model, seed=3)
    checkpoint = clip_jax.export_checkpoint(model, variables, str(root / "tiny.safetensors"))
    return spec, checkpoint


def finetune_config(spec, checkpoint, loss="ce", *options, **overrides):
    config = load_config("finetune", ",".join([spec, loss, *options, "runlocal"]))
    config.model, config.init_from = "tiny-vit", checkpoint
    config.mesh = (("data", -1), ("fsdp", 1))
    return override(config, **overrides)


class _NoCheckpoints:
    def latest_step(self):
        return None


def test_zeroshot_head_at_step_0_is_zero_shot(labelled):
    spec, checkpoint = labelled
    evals = (ml_collections.ConfigDict(dict(name="id", task="zeroshot", data=spec, batch_size=16,
                                            templates=("a photo of a {}.", "art of the {}."))),)
    config = finetune_config(spec, checkpoint, "ce", **{"finetune.templates": ("a photo of a {}.", "art of the {}.")})
    config.evals = evals
    setup = build(config)
    state, _ = initial_state(setup, _NoCheckpoints())
    with_head = evaluate(setup, state)
    model, variables = clip_jax.load_checkpoint(checkpoint)
    zero_shot = run_evals(model, variables, evals)
    assert with_head["eval/id/top1"] == zero_shot["eval/id/top1"]
    assert with_head["eval/id/mean_per_class_recall"] == zero_shot["eval/id/mean_per_class_recall"]
    # The head is exactly the scaled prompt ensemble.
    from clip_jax.evaluation.zeroshot import classifier_weights

    weights = classifier_weights(model, variables, folder_classes(), ["a photo of a {}.", "art of the {}."])
    np.testing.assert_allclose(np.asarray(state.params["head"]["kernel"]),
                               np.exp(float(variables["params"]["logit_scale"])) * np.asarray(weights), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(state.params["head"]["bias"]), 0.0)


def folder_classes():
    return sorted(CLASSES)  # a folder's classes are its subfolders in sorted order


def test_lp_ft_head_against_scikit_learn(labelled):
    from sklearn.linear_model import LogisticRegression

    from clip_jax.trainer import probe_features

    spec, checkpoint = labelled
    setup = build(finetune_config(spec, checkpoint, "ce", "lp_ft"))
    state, _ = initial_state(setup, _NoCheckpoints())
    head = jax.tree.map(np.asarray, state.params["head"])
    variables = {"params": classifier.model_variables({"params": state.params})["params"]}
    features, labels = probe_features(setup, variables)
    assert len(labels) == min(setup.config.finetune.probe_examples, 6 * 8)
    x = np.asarray(classifier.normalise(features))
    ours = (x @ head["kernel"] + head["bias"]).argmax(1)
    # The same L2-regularised multinomial objective; its penalty found by the probe's search.
    lam = _chosen_lambda(x, labels)
    reference = LogisticRegression(C=1.0 / lam, max_iter=5000, tol=1e-8).fit(x, labels)
    assert np.mean(ours == reference.predict(x)) >= 0.95


def _chosen_lambda(x, labels):
    from clip_jax.evaluation import linear_probe

    fit_idx, val_idx = linear_probe.split_validation(labels, seed=0)
    return linear_probe.search_lambda(x[fit_idx], labels[fit_idx], x[val_idx], labels[val_idx], len(CLASSES))[0]


def test_only_the_image_tower_and_head_train_with_cross_entropy(labelled, tmp_path):
    from clip_jax.trainer import train

    spec, checkpoint = labelled
    state = train(finetune_config(spec, checkpoint, "ce", **{"optim.lr": 1e-3}), str(tmp_path / "ce"))
    _, start = clip_jax.load_checkpoint(checkpoint)
    np.testing.assert_array_equal(np.asarray(state.params["text"]["token_embedding"]),
                                  np.asarray(start["params"]["text"]["token_embedding"]))
    np.testing.assert_array_equal(np.asarray(state.params["logit_scale"]), np.asarray(start["params"]["logit_scale"]))
    assert not np.array_equal(np.asarray(state.params["visual"]["proj"]), np.asarray(start["params"]["visual"]["proj"]))
    # Read back as a checkpoint: the head travels beside the model's variables.
    model, variables = clip_jax.load_checkpoint(str(tmp_path / "ce"))
    np.testing.assert_array_equal(variables["head"]["kernel"], np.asarray(state.params["head"]["kernel"]))
    assert "head" not in variables["params"]


def test_labelled_pipeline_prompts_labels_and_skips(tmp_path):
    from clip_jax import data
    from tests.helpers.evaluation import labelled_wds

    spec = labelled_wds(str(tmp_path), [0, 1, 2, 1, 0, 2] * 4)
    # samples without .cls (labels missing), mixed in as a second shard
    unlabelled = labelled_wds(str(tmp_path / "nolabel"), [0] * 6, with_cls=False)
    templates = ["a photo of a {}.", "a sketch of a {}."]
    iterator = data.train_iterator(f"{spec}+{unlabelled}", batch_size=8, image_size=32, seed=0, labels=True,
                                   class_names=["cat", "dog", "fish"], templates=templates,
                                   trace_dir=str(tmp_path / "trace"))
    batches = [next(iterator) for _ in range(3)]
    assert all(set(b["labels"].tolist()) <= {0, 1, 2} for b in batches)
    import json

    records = [json.loads(line) for line in open(tmp_path / "trace" / "process-0-of-1.jsonl")]
    captions = [c for r in records for c in r["captions"]]
    labels = [int(x) for b in batches for x in b["labels"]]
    names = ["cat", "dog", "fish"]
    assert all(c in {t.format(names[y]) for t in templates} for c, y in zip(captions, labels))
    assert {c.split()[1] for c in captions} == {"photo", "sketch"}  # both templates drawn
    assert iterator.stats()["skipped_labels"] > 0


def test_given_class_names_replace_a_source_own_captions(tmp_path):
    from clip_jax import data
    from clip_jax.data import demo

    iterator = data.train_iterator("demo:val?n=64", batch_size=16, image_size=32, seed=0, labels=True,
                                   class_names=demo.class_prompts(), templates=["{}"], trace_dir=str(tmp_path))
    batch = next(iterator)
    import json

    captions = json.loads(open(tmp_path / "process-0-of-1.jsonl").readline())["captions"]
    assert captions == [demo.class_prompts()[label] for label in batch["labels"]]  # not "two small red circles..."


def test_bad_inputs_fail_before_compiling(labelled, tmp_path):
    spec, checkpoint = labelled
    with pytest.raises(ValueError, match=r"5 class names given .* has 6 classes"):
        build(finetune_config(spec, checkpoint, "ce", **{"finetune.class_names": CLASSES[:5]}))
    with pytest.raises(ValueError, match="label_smoothing=0.1 needs loss='cross_entropy'"):
        build(finetune_config(spec, checkpoint, "flyp", **{"finetune.label_smoothing": 0.1}))
    with pytest.raises(ValueError, match="lp_ft needs loss='cross_entropy'"):
        build(finetune_config(spec, checkpoint, "flyp", "lp_ft"))
    with pytest.raises(ValueError, match="LOSS one of flyp, ce"):
        load_config("finetune", f"{spec},runlocal")
    with pytest.raises(ValueError, match="unknown: \\['lora'\\]"):
        load_config("finetune", f"{spec},ce,lora")
    parsed = load_config("finetune", f"{spec},flyp,lock_text,model=tiny-vit,init={checkpoint}")
    assert (parsed.model, parsed.init_from, parsed.loss, parsed.optim.frozen) == \
        ("tiny-vit", checkpoint, "flyp", (r"^text/",))
    assert parsed.data.num_examples == 6 * 8 and parsed.epochs == 10.0  # a folder's size is a listing away
    other = clip_jax.create_model("tiny-resnet")  # another architecture than the config names
    path = clip_jax.export_checkpoint(other, clip_jax.init_variables(other, seed=0), str(tmp_path / "o.safetensors"))
    setup = build(finetune_config(spec, path, "ce"))
    compiled = []
    setup.init_state = lambda rng: compiled.append(rng)
    with pytest.raises(ValueError, match="set config.model to the checkpoint's architecture"):
        initial_state(setup, _NoCheckpoints())
    assert not compiled  # refused before the state was created


def test_lora_with_a_head_trains_the_adapters_and_the_head_only(labelled, tmp_path):
    from clip_jax.trainer import train

    spec, checkpoint = labelled
    config = finetune_config(spec, checkpoint, "ce", **{"optim.lr": 1e-2, "lora.rank": 2,
                                                        "lora.targets": (r"^visual/transformer/.*/kernel$",)})
    setup = build(config)
    head_at_start = np.asarray(initial_state(setup, _NoCheckpoints())[0].params["head"]["kernel"])
    state = train(config, str(tmp_path / "ce_lora"))
    _, start = clip_jax.load_checkpoint(checkpoint)
    params = dict(state.params)
    adapters, head = params.pop("lora"), params.pop("head")
    for key, value in jax.tree_util.tree_flatten_with_path(start["params"])[0]:
        np.testing.assert_array_equal(np.asarray(_at(params, key)), np.asarray(value))
    assert not np.array_equal(np.asarray(head["kernel"]), head_at_start)
    moved = {path: float(np.abs(np.asarray(b)).max()) for path, b in jax.tree_util.tree_flatten_with_path(adapters)[0]
             if path[-1].key == "b"}
    assert all(v > 0 for v in moved.values()), {"/".join(k.key for k in p): v for p, v in moved.items()}


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


def test_cross_entropy_accumulation_equals_one_pass():
    """k micro-batches average to the one-pass loss and gradients (the head and the tower)."""
    from clip_jax.gradients import make_grad_fn

    model = clip_jax.create_model("tiny-vit")
    params = dict(clip_jax.init_variables(model, seed=0)["params"])
    rs = np.random.RandomState(0)
    params["head"] = {"kernel": jnp.asarray(rs.randn(32, 6).astype(np.float32)), "bias": jnp.zeros(6)}
    size = model.config.vision.image_size
    batch = {"images": jnp.asarray(rs.randint(0, 256, (16, size, size, 3)).astype(np.uint8)),
             "labels": jnp.asarray(rs.randint(0, 6, 16).astype(np.int32))}
    mesh = make_mesh([("data", -1), ("fsdp", 1)])
    key = jax.random.PRNGKey(0)
    one = make_grad_fn(model, "cross_entropy", mesh, 1, 0.1)(params, {}, batch, key)
    two = make_grad_fn(model, "cross_entropy", mesh, 2, 0.1)(params, {}, batch, key)
    np.testing.assert_allclose(float(two[0]), float(one[0]), rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(one[3])[0], jax.tree.leaves(two[3])):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=1e-4, err_msg=str(path))
