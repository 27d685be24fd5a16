"""Model FLOPs from the jaxpr (clip_jax.flops) against closed-form counts."""
import jax
import jax.numpy as jnp
import pytest

from clip_jax import create_model
from clip_jax.flops import matmul_flops, model_forward_flops, train_step_flops


def transformer_flops(tokens: int, width: int, layers: int, mlp: int) -> int:
    per_layer = (2 * tokens * width * 3 * width  # packed q, k, v
                 + 2 * 2 * tokens * tokens * width  # scores and weighted values
                 + 2 * tokens * width * width  # out_proj
                 + 2 * 2 * tokens * width * mlp)  # c_fc and c_proj
    return layers * per_layer


def vit_clip_flops(config) -> int:
    vision, text = config.vision, config.text
    grid = (vision.image_size // vision.patch_size) ** 2
    image = (2 * grid * vision.patch_size**2 * 3 * vision.width
             + transformer_flops(grid + 1, vision.width, vision.layers, vision.mlp_dim)
             + 2 * vision.width * config.embed_dim)
    text_flops = (transformer_flops(text.context_length, text.width, text.layers, 4 * text.width)
                  + 2 * text.width * config.embed_dim)
    return image + text_flops


@pytest.mark.parametrize("name", ["tiny-vit", "ViT-B/32", "ViT-L/14"])
def test_vit_forward_flops_match_closed_form(name):
    model = create_model(name)
    assert model_forward_flops(model, 3) == 3 * vit_clip_flops(model.config)


def test_scan_body_counted_per_iteration():
    def stacked(x, ws):
        return jax.lax.scan(lambda c, w: (c @ w, None), x, ws)[0]

    x, ws = jnp.ones((4, 8)), jnp.ones((5, 8, 8))
    assert matmul_flops(stacked, x, ws) == 5 * 2 * 4 * 8 * 8


def test_patch_dropout_reduces_train_flops():
    full = create_model("tiny-vit")
    dropped = create_model("tiny-vit", patch_dropout=0.5)
    assert train_step_flops(dropped, 2) < train_step_flops(full, 2)
    assert model_forward_flops(dropped, 2, train=False) == model_forward_flops(full, 2, train=False)
