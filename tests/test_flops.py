"""Model FLOPs from the jaxpr (clip_jax.flops) against closed-form counts."""
import jax
import jax.numpy as jnp
import pytest

from clip_jax import create_model
from clip_jax.flops import matmul_flops, model_forward_flops, train_step_flops


def block_flops(tokens: int, queries: int, width: int, mlp: int) -> int:
    """One block in which `queries` of the `tokens` rows are computed (all, or the pooled one)."""
    return (2 * tokens * width * 2 * width + 2 * queries * width * width  # packed k, v and q
            + 2 * 2 * queries * tokens * width  # scores and weighted values
            + 2 * queries * width * width  # out_proj
            + 2 * 2 * queries * width * mlp)  # c_fc and c_proj


def transformer_flops(tokens: int, width: int, layers: int, mlp: int, full_last_block: bool) -> int:
    last = block_flops(tokens, tokens if full_last_block else 1, width, mlp)
    return (layers - 1) * block_flops(tokens, tokens, width, mlp) + last


def vit_clip_flops(config, full_last_block: bool) -> int:
    vision, text = config.vision, config.text
    grid = (vision.image_size // vision.patch_size) ** 2
    image = (2 * grid * vision.patch_size**2 * 3 * vision.width
             + transformer_flops(grid + 1, vision.width, vision.layers, vision.mlp_dim, full_last_block)
             + 2 * vision.width * config.embed_dim)
    text_flops = (transformer_flops(text.context_length, text.width, text.layers, 4 * text.width, full_last_block)
                  + 2 * text.width * config.embed_dim)
    return image + text_flops


@pytest.mark.parametrize("name", ["tiny-vit", "ViT-B/32", "ViT-L/14"])
@pytest.mark.parametrize("full_last_block", [False, True])
def test_vit_forward_flops_match_closed_form(name, full_last_block):
    model = create_model(name).clone(full_last_block=full_last_block)
    assert model_forward_flops(model, 3) == 3 * vit_clip_flops(model.config, full_last_block)


def test_pooled_last_block_saves_most_of_a_block():
    # ViT-B/32: 11/12 of a block's matmuls skipped on 49 of 50 image tokens and 76 of 77
    # text tokens, minus the keys and values every token still needs: ~6.6% of the model.
    model = create_model("ViT-B/32")
    saved = 1 - model_forward_flops(model, 1) / model_forward_flops(model.clone(full_last_block=True), 1)
    assert 0.06 < saved < 0.075


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
