"""Model families, looked up by the name a `CLIPConfig` stores (`family_of(config)`).

Adding a family: a module here subclassing `Family` (base.py says what it decides), and
one `register` line below.
"""
from clip_jax.models.families.base import FAMILIES, Family, family_of, get_family, register
from clip_jax.models.families.clip import CLIP
from clip_jax.models.families.siglip import SIGLIP

register(CLIP)
register(SIGLIP)

__all__ = ["FAMILIES", "Family", "family_of", "get_family", "register"]
