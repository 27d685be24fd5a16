"""Architecture facts, initialisation, and the fast paths (bf16, remat) against the
plain float32 path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import clip_jax
from clip_jax.models import LOGIT_SCALE_INIT, MODELS
from tests.helpers.oracles import max_diff, random_inputs

# Parameter counts of OpenAI's released models: (visual, text + projection, total)
PARAMETER_COUNTS = {
    "RN50": (38_316_896, 63_690_240, 102_007_137),
    "RN101": (56_259_936, 63_428_096, 119_688_033),
    "RN50x4": (87_137_080, 91_163_520, 178_300_601),
    "RN50x16": (167_328_912, 123_650_304, 290_979_217),
    "RN50x64": (420_380_352, 202_877_952, 623_258_305),
    "ViT-B/32": (87_849_216, 63_428_096, 151_277_313),
    "ViT-B/16": (86_192_640, 63_428_096, 149_620_737),
    "ViT-L/14": (303_966_208, 123_650_304, 427_616_513),
    "ViT-L/14@336px": (304_293_888, 123_650_304, 427_944_193),
}


def param_shapes(name):
    model = clip_jax.create_model(name)
    size = model.config.vision.image_size
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)),
                          jnp.zeros((1, 77), jnp.int32))


def count(tree):
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_parameter_counts_match_the_paper_models(name):
    params = param_shapes(name)["params"]
    assert (count(params["visual"]), count(params["text"]), count(params)) == PARAMETER_COUNTS[name]


def test_open_clip_names_and_activations():
    assert MODELS["ViT-B-32-quickgelu"] == MODELS["ViT-B/32"]
    assert MODELS["ViT-B-32"].act == "gelu" and MODELS["ViT-B/32"].act == "quick_gelu"
    assert MODELS["RN50"].act == "quick_gelu"
    assert count(param_shapes("ViT-H-14")["params"]) == 986_109_441  # open_clip: 986.11M
    assert count(param_shapes("ViT-g-14")["params"]) == 1_366_678_273  # open_clip: 1366.68M
    assert {"ViT-B/32", "ViT-B-32", "RN50x64", "ViT-L/14@336px", "ViT-L-14-336"} <= set(clip_jax.available_models())


@pytest.fixture(scope="module", params=["tiny-vit", "tiny-resnet"])
def tiny(request):
    model = clip_jax.create_model(request.param)
    return model, clip_jax.init_variables(model, seed=0)


def test_initialisation_follows_openai(tiny):
    model, variables = tiny
    params = variables["params"]
    assert float(params["logit_scale"]) == pytest.approx(LOGIT_SCALE_INIT) == pytest.approx(np.log(1 / 0.07))
    text = params["text"]
    width, layers = model.config.text.width, model.config.text.layers
    blocks = text["transformer"]["blocks"]
    assert np.std(blocks["attn"]["in_proj"]["kernel"]) == pytest.approx(width**-0.5, rel=0.1)
    assert np.std(blocks["mlp"]["c_fc"]["kernel"]) == pytest.approx((2 * width) ** -0.5, rel=0.1)
    assert np.std(blocks["mlp"]["c_proj"]["kernel"]) == pytest.approx(width**-0.5 * (2 * layers) ** -0.5, rel=0.1)
    assert np.std(text["token_embedding"]) == pytest.approx(0.02, rel=0.05)
    assert not np.any(blocks["attn"]["in_proj"]["bias"])
    # the layers of a scanned stack are initialised independently
    kernel = np.asarray(blocks["attn"]["in_proj"]["kernel"])
    assert not np.allclose(kernel[0], kernel[1])
    if model.config.vision.is_resnet:
        assert not np.any(params["visual"]["layer1_0"]["bn3"]["scale"])  # zero-init residual branch
        assert np.all(params["visual"]["layer1_0"]["downsample_bn"]["scale"] == 1)
    else:
        scale = model.config.vision.width**-0.5
        assert np.std(params["visual"]["class_embedding"]) == pytest.approx(scale, rel=0.3)


def test_padding_after_eot_does_not_matter(tiny):
    model, variables = tiny
    tokens = clip_jax.tokenize(["a photo of a dog", "a photo of a dog"])
    tokens[1, 7:] = np.arange(70) + 5  # garbage after EOT (EOT stays the largest id)
    features = np.asarray(clip_jax.encode_text(model, variables, tokens))
    assert max_diff(features[0], features[1]) < 1e-6
    short = np.asarray(clip_jax.encode_text(model, variables, tokens[:1, :10]))  # shorter context
    assert max_diff(short[0], features[0]) < 1e-5


@jax.jit
def perturbed(variables, seed=0):
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    leaves = [x + 0.02 * jax.random.normal(k, x.shape) if x.ndim else x for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


def test_bfloat16_compute_is_close_to_float32(tiny):
    model, variables = tiny
    variables = perturbed(variables)
    fast = clip_jax.create_model(model.config, dtype="bfloat16")
    images, tokens = random_inputs(model.config)
    for encode, x in ((clip_jax.encode_image, images), (clip_jax.encode_text, tokens)):
        plain = np.asarray(encode(model, variables, x))
        half = np.asarray(encode(fast, variables, x), np.float32)
        cosine = np.sum(plain * half, -1) / np.linalg.norm(plain, axis=-1) / np.linalg.norm(half, axis=-1)
        assert cosine.min() > 0.99
    # parameters stay float32 under bf16 compute
    shapes = jax.eval_shape(fast.init, jax.random.PRNGKey(0), images, tokens)["params"]
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))


def test_remat_gives_the_same_values_and_gradients(tiny):
    model, variables = tiny
    variables = perturbed(variables)
    remat = clip_jax.create_model(model.config, remat=True)
    images, tokens = random_inputs(model.config)

    def loss(m, params):
        image, text, scale = m.apply({**variables, "params": params}, images, tokens)
        return jnp.sum(image**2) + jnp.sum(text**2) + scale

    plain_value, plain_grad = jax.jit(jax.value_and_grad(lambda p: loss(model, p)))(variables["params"])
    remat_value, remat_grad = jax.jit(jax.value_and_grad(lambda p: loss(remat, p)))(variables["params"])
    assert float(plain_value) == pytest.approx(float(remat_value), rel=1e-6)
    for a, b in zip(jax.tree.leaves(plain_grad), jax.tree.leaves(remat_grad)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_unknown_option_values():
    with pytest.raises(ValueError, match="bfloat16"):
        clip_jax.create_model("tiny-vit", dtype="float8")
    with pytest.raises(ValueError, match="quick_gelu"):
        clip_jax.create_model("tiny-vit", act="relu")
