"""Packaging for clip_jax: CLIP in JAX/Flax.

Install:            pip install -e .
With test oracles:  pip install -e ".[test]"
On a GPU / TPU:     pip install -e ".[gpu]"  /  pip install -e ".[tpu]"

Versions are pinned to a set that is known to install and work together on
Python 3.11 (see README).  Torch, open_clip and transformers are test-only
oracles for parity; the library itself never imports them.
"""
from setuptools import find_packages, setup

JAX_VERSION = "0.10.2"

INSTALL_REQUIRES = [
    f"jax=={JAX_VERSION}",
    f"jaxlib=={JAX_VERSION}",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "importlib_resources==6.5.2",  # tensorflow-datasets' etils.epath imports it but does not require it
    "tensorboard==2.21.0",
    "sentencepiece==0.2.3",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "ftfy==6.3.1",
    "regex==2026.11.15",
    "pillow==13.0.0",
    "numpy==2.4.6",
    "safetensors==0.8.0",
    "huggingface_hub==0.36.2",  # pretrained weights: hub downloads, its cache, HF_ENDPOINT / HF_HUB_OFFLINE
    "tqdm==4.70.1",
    # clip_jax.search: approximate nearest neighbours, and the web page's server
    "faiss-cpu==1.15.1",
    "starlette==1.10.0",
    "uvicorn==0.54.0",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest==9.2.0",
        "pytest-xdist==3.8.0",
        "ruff==0.17.6",  # house rules: pyproject.toml, run by .ci/run
        "hypothesis==6.170.15",
        # torch 2.14.1 / torchvision 0.29.1 are the pair that import together
        # on these machines (the CPU-only 2.13.0 wheel breaks torchvision).
        "torch==2.14.1",
        "torchvision==0.29.1",
        "open_clip_torch==3.3.0",
        "transformers==4.57.6",
        "webdataset==0.2.86",
        # bench/data_pipeline.py: open_clip_train's WebDataset loader imports pandas; CPU time of its workers
        "pandas==3.1.1",
        "psutil==7.2.2",
        "clip-benchmark==1.6.2",  # evaluation parity oracle
        "scikit-learn==1.7.2",
        # notebooks/ run in tests/e2e/test_notebooks.py (papermill on an ipykernel kernel)
        "papermill==2.7.0",
        "nbformat==5.11.1",
        "ipykernel==7.4.0",
        "matplotlib==3.11.2",
    ],
    "gpu": [f"jax[cuda12]=={JAX_VERSION}"],
    "tpu": [f"jax[tpu]=={JAX_VERSION}"],
}

setup(
    name="clip_jax",
    version="0.1.0",
    description="CLIP (Radford et al. 2021) in JAX/Flax: OpenAI-exact models, "
    "pod-scale training, zero-shot and linear-probe evaluation.",
    python_requires=">=3.11,<3.13",  # 3.12 for Colab: every pinned wheel exists for it; CI runs 3.11
    packages=find_packages(include=["clip_jax", "clip_jax.*"]),
    package_data={"clip_jax": ["tokenizers/*.gz", "evaluation/data/*.json", "pretrained/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
