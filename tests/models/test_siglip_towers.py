"""SigLIP architecture facts: the registered names and their parameter counts against
transformers' SiglipModel / Siglip2Model of the same configs, and the SigLIP towers'
fast paths (pooled last text block, bf16, remat) against the plain computation."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import clip_jax
from clip_jax.models import MODELS, check_config, family_of
from clip_jax.models.families.siglip_naming import config_to_hf

SIGLIP_NAMES = sorted(n for n in MODELS if n.startswith(("siglip-", "siglip2-")))


def count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def param_shapes(config):
    model = clip_jax.create_model(config)
    size = config.vision.image_size
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)),
                          jnp.zeros((1, config.text.context_length), jnp.int32))["params"]


def test_registered_names():
    expected = {f"{family}-{shape}" for family in ("siglip", "siglip2") for shape in (
        "base-patch16-224", "base-patch16-256", "base-patch16-384", "base-patch16-512", "large-patch16-256",
        "large-patch16-384", "so400m-patch14-224", "so400m-patch14-384")}
    expected |= {f"siglip2-{shape}" for shape in ("base-patch32-256", "large-patch16-512", "so400m-patch16-256",
                                                  "so400m-patch16-384", "so400m-patch16-512")}  # SigLIP 2 only
    assert set(SIGLIP_NAMES) == expected
    for name in SIGLIP_NAMES:
        config = MODELS[name]
        assert config.act == "gelu_tanh" and family_of(config).layer_norm_eps == 1e-6
        assert config.embed_dim == config.vision.width
        text = (256_000, "gemma") if name.startswith("siglip2") else (32_000, "siglip")
        assert (config.text.vocab_size, config.text.tokenizer) == text
        # SigLIP so400m/14 at 224 px was trained on 16-token texts; every other model on 64.
        assert config.text.context_length == (16 if name == "siglip-so400m-patch14-224" else 64)
        assert clip_jax.models.name_of(config) == name


@pytest.mark.parametrize("name", SIGLIP_NAMES)
def test_parameter_counts_equal_transformers(name):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = MODELS[name]
    hf = config_to_hf(config)
    with torch.device("meta"):  # shapes only: so400m costs nothing
        reference = transformers.SiglipModel(transformers.SiglipConfig(text_config=hf["text_config"],
                                                                       vision_config=hf["vision_config"]))
    expected = sum(p.numel() for p in reference.parameters())
    params = param_shapes(config)
    assert count(params) == expected
    assert count(params["visual"]) == sum(p.numel() for p in reference.vision_model.parameters())
    if name.startswith("siglip2"):  # Siglip2Model (NaFlex) of the same towers: a linear patch embedding
        grid = config.vision.image_size // config.vision.patch_size
        vision = {k: v for k, v in hf["vision_config"].items() if k != "image_size"}
        with torch.device("meta"):
            naflex = transformers.Siglip2Model(transformers.Siglip2Config(
                text_config=hf["text_config"], vision_config={**vision, "num_patches": grid * grid}))
        assert sum(p.numel() for p in naflex.parameters()) == expected


@pytest.fixture(scope="module")
def initial():
    model = clip_jax.create_model("tiny-siglip")
    return model, clip_jax.init_variables(model, seed=0)


@pytest.fixture(scope="module")
def tiny(initial):
    model, variables = initial
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    variables = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) if x.ndim else x
                                          for x, k in zip(leaves, keys)])
    rs = np.random.RandomState(0)
    images = rs.randn(3, 32, 32, 3).astype(np.float32)
    tokens = rs.randint(0, 1000, (3, 16)).astype(np.int32)
    return model, variables, images, tokens


def test_initial_temperature_and_bias(initial):
    model, variables = initial
    params = variables["params"]
    assert float(params["logit_scale"]) == pytest.approx(np.log(10.0)) and float(params["logit_bias"]) == -10.0
    assert not np.any(params["visual"]["conv1"]["bias"]) and params["visual"]["head"]["probe"].shape == (1, 1, 64)
    # The blocks of a scanned stack are initialised independently.
    kernel = np.asarray(params["text"]["transformer"]["blocks"]["attn"]["in_proj"]["kernel"])
    assert not np.allclose(kernel[0], kernel[1])


def test_pooled_last_text_block_equals_the_full_block(tiny):
    model, variables, images, tokens = tiny
    full = model.clone(full_last_block=True)
    fast = np.asarray(clip_jax.encode_text(model, variables, tokens))
    plain = np.asarray(clip_jax.encode_text(full, variables, tokens))
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-6)


def test_text_reads_every_position_and_images_every_patch(tiny):
    """Bidirectional text pooled at the last position: a change anywhere moves the feature
    (no EOT trimming is possible); the MAP head sees every patch."""
    model, variables, images, tokens = tiny
    changed = tokens.copy()
    changed[:, 0] = (changed[:, 0] + 1) % 1000
    a, b = (np.asarray(clip_jax.encode_text(model, variables, t)) for t in (tokens, changed))
    assert np.abs(a - b).max(axis=1).min() > 1e-4
    corner = images.copy()
    corner[:, :8, :8] += 1.0  # the first patch only
    a, b = (np.asarray(clip_jax.encode_image(model, variables, x)) for x in (images, corner))
    assert np.abs(a - b).max(axis=1).min() > 1e-4
    with pytest.raises(ValueError, match="padded to the full 16 positions"):
        clip_jax.encode_text(model, variables, tokens[:, :10])


def test_bfloat16_and_remat_match_float32(tiny):
    model, variables, images, tokens = tiny
    half = clip_jax.create_model(model.config, dtype="bfloat16")
    for encode, x in ((clip_jax.encode_image, images), (clip_jax.encode_text, tokens)):
        plain, fast = np.asarray(encode(model, variables, x)), np.asarray(encode(half, variables, x), np.float32)
        cosine = np.sum(plain * fast, -1) / np.linalg.norm(plain, axis=-1) / np.linalg.norm(fast, axis=-1)
        assert cosine.min() > 0.99
    remat = clip_jax.create_model(model.config, remat=True)

    def loss(m, params):
        image, text, scale = m.apply({"params": params}, images, tokens)
        return jnp.sum(image**2) + jnp.sum(text**2) + scale + params["logit_bias"]

    plain = jax.jit(jax.value_and_grad(lambda p: loss(model, p)))(variables["params"])
    again = jax.jit(jax.value_and_grad(lambda p: loss(remat, p)))(variables["params"])
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(again)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_patch_dropout_keeps_a_subset_of_patches(tiny):
    model, variables, images, tokens = tiny
    dropping = clip_jax.create_model(model.config, patch_dropout=0.5)
    out = jax.jit(lambda v, x: dropping.apply(v, x, train=True, rngs={"patch_dropout": jax.random.PRNGKey(0)},
                                              method="encode_image"))(variables, images)
    assert out.shape == (3, 64) and np.isfinite(np.asarray(out)).all()
    # Without train=True nothing is dropped.
    np.testing.assert_allclose(clip_jax.encode_image(dropping, variables, images),
                               clip_jax.encode_image(model, variables, images), rtol=1e-6, atol=1e-6)


def test_config_checks():
    config = MODELS["tiny-siglip"]
    with pytest.raises(ValueError, match="embed_dim must equal it"):
        check_config(dataclasses.replace(config, embed_dim=32))
    with pytest.raises(ValueError, match="unknown model family 'align'"):
        check_config(dataclasses.replace(config, family="align"))
    with pytest.raises(ValueError, match="unknown tokenizer 'wordpiece'"):
        check_config(dataclasses.replace(config, text=dataclasses.replace(config.text, tokenizer="wordpiece")))
    restored = type(config).from_json(config.to_json())
    assert restored == config
