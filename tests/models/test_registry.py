"""clip_jax.models.registry: every registered architecture passes the checks, and
docs/models.md is the registry's own table (so the documentation cannot go stale)."""
import os

import pytest

from clip_jax.models import MODELS, check_config, family_of
from clip_jax.models.registry import markdown_table
from tests.helpers.runtime import ROOT


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_architecture_is_valid(name):
    config = MODELS[name]
    check_config(config)
    assert config.vision.tower in family_of(config).tower_kinds


def test_the_documented_table_is_the_registry():
    with open(os.path.join(ROOT, "docs", "models.md")) as f:
        documented = f.read()
    table = markdown_table()
    assert documented.endswith(table), "docs/models.md is stale: regenerate its table (see the page)"
    assert documented.count("\n| ") == len(MODELS) + 1  # the header and a row per name


def test_a_family_or_task_missing_part_of_its_contract_cannot_be_made():
    from clip_jax.evaluation.tasks import Task
    from clip_jax.models.families import Family

    class Partial(Family):
        name = "partial"

    with pytest.raises(TypeError, match="build_towers"):
        Partial()

    class NoRun(Task):
        name = "norun"

    with pytest.raises(TypeError, match="run"):
        NoRun()
