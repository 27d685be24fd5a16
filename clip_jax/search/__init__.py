"""Semantic search over your own images: index a folder, query it by text or example, serve it.

    python -m clip_jax.search index ~/Pictures --checkpoint ViT-B-32.pt --index ~/pictures.index
    python -m clip_jax.search query ~/pictures.index "a red bicycle" -k 20
    python -m clip_jax.search query ~/pictures.index --image beach.jpg --plus "at night" --sheet hits.jpg
    python -m clip_jax.search classify ~/pictures.index --labels "cat,dog,car" --out labels.csv
    python -m clip_jax.search serve ~/pictures.index --port 8000

    from clip_jax.search import Index
    index = Index.build("~/Pictures", "~/pictures.index", checkpoint="ViT-B-32.pt")
    hits = index.search("a red bicycle", k=20)

Modules: files (walking, fingerprints, EXIF-aware reading), encoder (the model, its
fingerprint, normalised embeddings), embedding (threaded reading + batched encoding in
chunks), store (the on-disk format, atomic and durable), exact and ann (the two search
backends), index (the `Index` API), thumbs and sheet (thumbnails, contact sheets),
server (the web page and JSON API), cli (the command line).
"""
from clip_jax.search.index import Hit, Index, ModelMismatchError
from clip_jax.search.store import DamagedIndexError, IndexBusyError, SearchIndexError

__all__ = ["DamagedIndexError", "Hit", "Index", "IndexBusyError", "ModelMismatchError", "SearchIndexError"]
