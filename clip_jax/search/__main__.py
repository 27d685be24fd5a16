"""python -m clip_jax.search: see clip_jax.search.cli."""
import sys

from clip_jax.search.cli import main

sys.exit(main())
