"""The one CLIP trainer: sharded state, a pure train step, and the loop around it.

Flow: config -> mesh and model -> abstract state -> shardings from regex rules ->
state created (or restored) already sharded under jit -> for each step: the next global
batch (already on the devices, see prefetch.py) goes through the compiled step, which
updates the donated state -> metrics, checkpoints (with every host's data position),
evaluations, and a save at the step all hosts agree on when any of them gets SIGTERM.
The loop's small parts (when to act, throughput, compiled-step cache, preemption notice)
are in loop.py; losses are pluggable by name (losses.LOSSES).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from typing import Any, Callable, Iterator

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from clip_jax import classifier, lora, losses, tokenizers, train_config
from clip_jax.flops import train_step_flops
from clip_jax.gradients import make_grad_fn
from clip_jax.loop import CompiledSteps, Throughput, itstime, preemption_notice
from clip_jax.models import create_model, family_of, name_of
from clip_jax.models.model import example_inputs
from clip_jax.optim import make_optimizer
from clip_jax.prefetch import Prefetcher
from clip_jax.sharding import batch_devices, make_mesh, replicated, tree_shardings
from clip_jax.train_checkpoints import (
    Checkpointer,
    abstract_with_shardings,
    gather_from_hosts,
    meta_for,
    run_contract,
)
from clip_jax.train_metrics import MetricsWriter, peak_flops_per_device


class NonFiniteLossError(RuntimeError):
    """The loss or gradients became NaN/Inf; names the step and the last good checkpoint."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any  # BatchNorm statistics of ResNets; {} for ViTs
    opt_state: Any
    nonfinite_count: jax.Array  # updates skipped because loss or gradients were not finite
    first_nonfinite_step: jax.Array  # -1 until the first such step


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """Everything the train step depends on besides (state, batch); static under jit."""

    model: Any
    optimizer: Any  # an optax GradientTransformation
    lr_schedule: Callable[[Any], Any]
    loss: str  # a name in losses.LOSSES
    mesh: Any
    seed: int
    accumulation_steps: int = 1
    label_smoothing: float = 0.0  # cross_entropy only
    adapter_scale: float | None = None  # LoRA's alpha / rank; None: no adapters


@dataclasses.dataclass
class Setup:
    """Everything derived from the config before any array exists."""

    config: ml_collections.ConfigDict
    model: Any
    mesh: Any
    step_options: StepOptions
    total_steps: int
    abstract_state: TrainState
    state_shardings: TrainState
    local_batch_size: int
    meta: dict
    init_state: Callable  # rng -> TrainState, jitted with the state shardings
    # Fine-tuning on labelled data (loss flyp / cross_entropy): the class names in label
    # order (a class may be a list of synonyms) and the prompt templates; else None.
    classes: list | None = None
    templates: list | None = None

    def model_at(self, step: int):
        """The model step `step` trains: FLIP's final `patch_dropout_unmasked_steps` run
        the same parameters with every patch kept."""
        unmasked_from = self.total_steps - self.config.patch_dropout_unmasked_steps + 1
        if not self.model.patch_dropout or step < unmasked_from:
            return self.model
        if self._unmasked is None:
            self._unmasked = self.model.clone(patch_dropout=0.0)
            logging.info("patch dropout off from step %d", step)
        return self._unmasked

    _unmasked: Any = dataclasses.field(default=None, repr=False)


def build(config: ml_collections.ConfigDict) -> Setup:
    """Everything the config describes, checked once here (train_config.complete, then
    validate on this mesh): the Setup's config holds every key with its value or default."""
    config = train_config.complete(config)
    mesh = make_mesh([tuple(axis) for axis in config.mesh])
    train_config.validate(config, batch_devices(mesh), jax.process_count())
    model = create_model(config.model, dtype=config.compute_dtype, remat=config.remat,
                         patch_dropout=config.patch_dropout, attention=config.attention,
                         **losses.model_options(config.loss, config.logit_scale_init, config.logit_bias_init))
    if model.patch_dropout and model.config.vision.is_resnet:
        raise ValueError(f"patch_dropout={model.patch_dropout} needs a ViT; {config.model} is a ResNet")
    tokenizers.resolve(model, config.data.options.tokenizer)  # its kind and vocabulary must be the model's
    steps = train_config.total_steps(config)
    classes, templates = finetune_classes(config, model)
    spec = losses.loss_spec(config.loss)
    images, tokens = example_inputs(model.config)
    abstract_params = dict(jax.eval_shape(model.init, jax.random.PRNGKey(0), images, tokens)["params"])
    optim = ml_collections.ConfigDict(config.optim.to_dict())
    if spec.classification:  # the head trains with the image tower; nothing else does
        optim.frozen = tuple(optim.frozen) + classifier.frozen_patterns(abstract_params)
        abstract_params[classifier.HEAD] = classifier.abstract_head(model.config.embed_dim, len(classes))
    adapters = config.lora.targets
    if adapters:  # on the model's kernels (not a head's); each target must match one, checked here
        towers = {k: v for k, v in abstract_params.items() if k != classifier.HEAD}
        abstract_params[lora.ADAPTERS] = lora.abstract_adapters(towers, adapters, config.lora.rank)
        # only the adapters (and a head) train
        optim.frozen = tuple(optim.frozen) + lora.frozen_patterns(abstract_params, keep=(classifier.HEAD,))
    optimizer, lr = make_optimizer(optim, abstract_params, steps)

    def init_state(rng):
        variables = model.init(rng, images, tokens)
        params = dict(variables["params"])
        if spec.classification:  # filled in by initial_state (zero-shot or probe weights)
            params[classifier.HEAD] = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                                                   abstract_params[classifier.HEAD])
        if adapters:
            params[lora.ADAPTERS] = lora.init_adapters(jax.random.fold_in(rng, 1), abstract_params[lora.ADAPTERS])
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=optimizer.init(params),
            nonfinite_count=jnp.zeros((), jnp.int32),
            first_nonfinite_step=jnp.full((), -1, jnp.int32),
        )

    abstract = jax.eval_shape(init_state, jax.random.PRNGKey(0))
    shardings = tree_shardings(abstract, mesh, [tuple(r) for r in config.sharding_rules])
    scale = lora.scale_of(config.lora.alpha, config.lora.rank) if adapters else None
    options = StepOptions(model, optimizer, lr, config.loss, mesh, config.seed, config.accumulation_steps,
                          config.finetune.label_smoothing, scale)
    return Setup(config, model, mesh, options, steps, abstract, shardings, config.batch_size // jax.process_count(),
                 meta_for(config.model, model.config, run=run_contract(config), loss=config.loss,
                          scoring=model.scoring, adapter_scale=scale),
                 init_state=jax.jit(init_state, out_shardings=shardings), classes=classes, templates=templates)


def finetune_classes(config, model) -> tuple[list | None, list | None]:
    """(class names in label order, prompt templates) of a fine-tune on labelled data
    (loss flyp or cross_entropy), checked against the data's own classes or labels as
    eval.py checks a zero-shot evaluation; (None, None) for other losses."""
    from clip_jax.evaluation.prompts import resolve_templates
    from clip_jax.evaluation.tasks import zeroshot_classes
    from clip_jax.evaluation.zeroshot import default_templates

    spec = losses.loss_spec(config.loss)
    if not (spec.classification or spec.uses_caption_keys):
        return None, None
    check = {"name": "finetune", "data": config.data.train, "class_names": config.finetune.class_names or None}
    try:
        classes, _ = zeroshot_classes(check)
    except ValueError as error:
        raise ValueError(f"{error} (config.finetune.class_names)".replace("evaluation 'finetune'",
                                                                          f"loss {config.loss!r}")) from None
    templates = (resolve_templates(config.finetune.templates) if config.finetune.templates
                 else default_templates(model.config))
    return classes, templates


def train_step(state: TrainState, batch: dict, options: StepOptions) -> tuple[TrainState, dict]:
    """One optimizer step on a global batch: a pure function of (state, batch).

    A non-finite loss or gradient norm never updates the state: it is counted, and the
    first such step recorded (the loop then stops or goes on, by `on_nonfinite`)."""
    grad_fn = make_grad_fn(options.model, options.loss, options.mesh, options.accumulation_steps,
                           options.label_smoothing, options.adapter_scale)
    rng = jax.random.fold_in(jax.random.PRNGKey(options.seed), state.step)  # the same on resume
    loss, metrics, batch_stats, grads = grad_fn(state.params, state.batch_stats, batch, rng)
    updates, opt_state = options.optimizer.update(grads, state.opt_state, state.params)
    params = flax.core.unfreeze(jax.tree.map(lambda p, u: p + u, state.params, updates))
    # The scoring rule's range (softmax: the paper's cap at 100; sigmoid: none).
    params["logit_scale"] = options.model.scoring_rule.clamp(params["logit_scale"])
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads)))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    new_state = TrainState(
        step=state.step + 1,
        params=keep(params, state.params),
        batch_stats=keep(batch_stats, state.batch_stats),
        opt_state=keep(opt_state, state.opt_state),
        nonfinite_count=state.nonfinite_count + (~finite).astype(jnp.int32),
        first_nonfinite_step=jnp.where((state.first_nonfinite_step < 0) & ~finite,
                                       state.step + 1, state.first_nonfinite_step),
    )
    metrics = {
        **metrics,
        "loss": loss,
        "grad_norm": grad_norm,
        "logit_scale": jnp.exp(new_state.params["logit_scale"]),
        **({"logit_bias": new_state.params["logit_bias"]} if "logit_bias" in new_state.params else {}),
        "lr": options.lr_schedule(state.step),
        "nonfinite_updates": new_state.nonfinite_count,
    }
    return new_state, metrics


def jit_train_step(setup: Setup, model=None):
    """`train_step` for `model` (default: the configured one) jitted with the state's
    shardings, donating the old state."""
    options = dataclasses.replace(setup.step_options, model=model or setup.model)
    return jax.jit(functools.partial(train_step, options=options), in_shardings=(setup.state_shardings, None),
                   out_shardings=(setup.state_shardings, replicated(setup.mesh)), donate_argnums=(0,))


def default_data(setup: Setup, seed: int):
    """The configured training iterator for this host (with uint8 images by default:
    the step normalises them)."""
    from clip_jax import data

    config = setup.config
    options = config.data.options.to_dict()
    if setup.classes is not None:  # labelled data: captions from class prompts, labels for a head
        options.setdefault("class_names", [n if isinstance(n, str) else n[0] for n in setup.classes])
        options.setdefault("templates", setup.templates)
        options.setdefault("labels", losses.loss_spec(config.loss).classification)
    return data.train_iterator(
        config.data.train,
        batch_size=setup.local_batch_size,
        image_size=setup.model.config.vision.image_size,
        seed=seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        context_length=setup.model.config.text.context_length,
        family=setup.model.config.family,
        **options,
    )


def initial_state(setup: Setup, checkpointer: Checkpointer):
    """(state, every saving host's data position or None): resumed (on any mesh and host
    count: Orbax reshards), fine-tuned or fresh."""
    config = setup.config
    latest = checkpointer.latest_step()
    if latest is not None:
        checkpointer.check_compatible(latest, setup.meta)
        abstract = abstract_with_shardings(setup.abstract_state, setup.state_shardings)
        state, positions = checkpointer.restore(latest, abstract)
        logging.info("resumed from %s at step %d (saved by %d hosts)", checkpointer.directory, latest,
                     len(positions))
        return state, positions
    variables = None
    if config.init_from:  # read (and its architecture checked) before anything compiles
        from clip_jax.convert import read_checkpoint
        from clip_jax.convert.placement import put_on

        def place(model_config):  # each tensor straight onto its shard as it is read
            if model_config != setup.model.config:
                raise ValueError(f"init_from {config.init_from} holds {name_of(model_config) or model_config}, "
                                 f"but the config trains {config.model}: {setup.model.config}; set config.model "
                                 "to the checkpoint's architecture")
            return put_on({"params": setup.state_shardings.params,
                           "batch_stats": setup.state_shardings.batch_stats})

        _, variables = read_checkpoint(config.init_from, place=place)
    # 'rbg' keys compile a model's many initialisers faster than threefry.
    state = setup.init_state(jax.random.key(config.seed, impl="rbg"))
    if variables is not None:
        params = dict(variables["params"])  # (a checkpoint's head, if any, is beside them)
        for own in (classifier.HEAD, lora.ADAPTERS):  # this run's own, not the checkpoint's
            if own in state.params:
                params[own] = state.params[own]
        state = state.replace(params=params, batch_stats=variables.get("batch_stats", {}))
        logging.info("initialised from %s", config.init_from)
    if classifier.HEAD in state.params:
        state = state.replace(params={**state.params, classifier.HEAD: jax.device_put(
            initial_head(setup, state), setup.state_shardings.params[classifier.HEAD])})
    return state, None


def initial_head(setup: Setup, state: TrainState) -> dict:
    """A classification fine-tune's starting head: the zero-shot classifier of the
    starting model, or (finetune.lp_ft) a probe on its features of the training data."""
    config = setup.config
    variables = {"params": model_params(setup, state.params), "batch_stats": state.batch_stats}
    if not config.finetune.lp_ft:
        return classifier.zeroshot_head(setup.model, variables, setup.classes, setup.templates,
                                        tokenizer=config.data.options.tokenizer)
    features, labels = probe_features(setup, variables)
    return classifier.probe_head(features, labels, len(setup.classes), seed=config.seed)


def model_params(setup: Setup, params) -> dict:
    """The parameters the model runs on: adapters merged, without a head."""
    return lora.folded(classifier.model_variables({"params": params})["params"], setup.step_options.adapter_scale)


def probe_features(setup: Setup, variables) -> tuple[np.ndarray, np.ndarray]:
    """Image features (evaluation transform) and labels of the first
    `finetune.probe_examples` labelled training examples, for LP-FT's probe."""
    import itertools

    from clip_jax import data
    from clip_jax.evaluation import features as features_lib

    config, model = setup.config, setup.model
    batch_size = max(jax.device_count(), min(256, config.batch_size))
    batch_size -= batch_size % jax.device_count()
    batches = data.eval_batches(config.data.train, batch_size=batch_size, image_size=model.config.vision.image_size,
                                process_index=jax.process_index(), process_count=jax.process_count(),
                                family=model.config.family)
    wanted = -(-config.finetune.probe_examples // (batch_size * jax.process_count()))
    feats = features_lib.extract(model, variables, itertools.islice(batches, wanted))
    keep = (feats.labels >= 0) & (feats.labels < len(setup.classes))
    return feats.images[keep][: config.finetune.probe_examples], feats.labels[keep][: config.finetune.probe_examples]


class Saver:
    """The one save path: a step is saved at most once, and never with a non-finite
    update pending in "stop" mode (then NonFiniteLossError names the last good step)."""

    def __init__(self, checkpointer: Checkpointer, meta: dict, on_nonfinite: str):
        self.checkpointer, self.meta, self.on_nonfinite = checkpointer, meta, on_nonfinite
        self.last_saved = checkpointer.latest_step()

    def check_finite(self, state: TrainState) -> None:
        first_bad = int(state.first_nonfinite_step)
        if first_bad >= 0 and self.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"loss or gradients became NaN/Inf at step {first_bad}; the update was not applied. "
                f"Last good checkpoint: step {self.last_saved}. Set on_nonfinite='skip' to skip such updates.")

    def save(self, step: int, state: TrainState, position) -> None:
        """Every host calls it at the same step, with its own data position."""
        if step != self.last_saved:
            self.check_finite(state)
            self.checkpointer.save(step, state, gather_from_hosts(position), self.meta, force=True)
            self.last_saved = step


def resume_data(iterator, positions: list) -> None:
    """Continue `iterator` from the saving run's hosts' positions: its own on the same
    host count; dealt out anew on another (iterators with set_host_states), else an error."""
    if hasattr(iterator, "set_host_states"):
        iterator.set_host_states(positions)
    elif len(positions) == jax.process_count():
        iterator.set_state(positions[jax.process_index()])
    else:
        raise ValueError(f"the checkpoint's data positions are of {len(positions)} hosts and this run has "
                         f"{jax.process_count()}; {type(iterator).__name__} cannot continue on another host count")


def train(config: ml_collections.ConfigDict, workdir: str,
          data_fn: Callable[[Setup, int], Iterator] | None = None) -> TrainState:
    """Train until config's length, resuming from `workdir` if it holds a checkpoint."""
    setup = build(config)
    config = setup.config  # every key, with its default where `config` leaves it out
    with contextlib.ExitStack() as stack:
        checkpointer = stack.enter_context(contextlib.closing(Checkpointer.for_workdir(
            workdir, keep=config.keep_checkpoints, asynchronous=config.async_checkpoints)))
        state, positions = initial_state(setup, checkpointer)
        iterator = (data_fn or default_data)(setup, config.seed)
        if positions is not None:
            resume_data(iterator, positions)
        stack.callback(getattr(iterator, "close", lambda: None))  # release tf.data's readers
        batches = stack.enter_context(contextlib.closing(
            Prefetcher(iterator, setup.mesh, transform=text_trimmer(config, setup.mesh, setup.model.config))))
        writer = stack.enter_context(contextlib.closing(
            MetricsWriter(workdir, setup.total_steps, enabled=jax.process_index() == 0)))
        preempted = stack.enter_context(preemption_notice())
        saver = Saver(checkpointer, setup.meta, config.on_nonfinite)
        steps = CompiledSteps(functools.partial(jit_train_step, setup),
                              lambda model, length: train_step_flops(model, config.batch_size, length)
                              / jax.device_count())
        meter = Throughput(config.batch_size, jax.device_count(), peak_flops_per_device(config.peak_flops))
        first = int(state.step) + 1
        for step in range(first, setup.total_steps + 1):
            with meter.waiting_for_data():
                batch, position = batches.next()
            compiled_step, flops = steps.get(setup.model_at(step), state, batch, on_compile=meter.reset)
            state, metrics = compiled_step(state, batch)
            meter.count(flops)
            last = step == setup.total_steps
            stop = preempted(step)  # every host, every step: they agree on the step to stop at
            if itstime(step, config.log_every, last) or step == first:
                saver.check_finite(state)
                writer.write(step, {**jax.device_get(metrics), **meter.read(), **data_stats(iterator)})
            if itstime(step, config.checkpoint_every, last) or stop:
                saver.save(step, state, position)
            if stop:
                logging.warning("preempted (SIGTERM): saved step %d, exiting", step)
                break
            if config.evals and itstime(step, config.eval_every, last):
                writer.write(step, evaluate(setup, state))
    return state


def text_trimmer(config, mesh, model_config=None) -> Callable[[dict], dict] | None:
    """Cut each batch's tokens after its last EOT (`trim_after_eot`: the same loss and
    gradients, less text-tower work): always, never, or ("auto") where that is safe.
    Only families whose text tower allows it (CLIP's causal one; SigLIP's reads its padding)."""
    mode = config.trim_text
    if model_config is not None and not family_of(model_config).trims_text:
        return None
    if mode == "never" or (mode == "auto" and not trimming_is_safe(mesh)):
        return None
    family = family_of(model_config or "clip")
    return lambda batch: {**batch, "tokens": family.trim_text(batch["tokens"])}


def trimming_is_safe(mesh) -> bool:
    """One process (hosts would have to agree on the length of their slices), and not
    several simulated CPU devices: there XLA's CPU runtime deadlocked in a collective
    rendezvous with the trimmed step (configs/demo.py on a 4 x 2 data x fsdp mesh of 8
    host devices; the same run untrimmed passes; bench/RESULTS.md)."""
    if jax.process_count() > 1:
        return False
    return mesh.devices.size == 1 or mesh.devices.flat[0].platform != "cpu"


def evaluate(setup: Setup, state: TrainState) -> dict:
    from clip_jax.evaluation.runner import run_evals

    variables = {"params": model_params(setup, state.params)}
    if classifier.HEAD in state.params:
        variables[classifier.HEAD] = state.params[classifier.HEAD]
    if setup.model.config.vision.is_resnet:
        variables["batch_stats"] = state.batch_stats
    results = run_evals(setup.model, variables, setup.config.evals,
                        tokenizer=setup.config.data.options.tokenizer)
    logging.info("step %d evaluation: %s", int(state.step), results)
    return results


def data_stats(iterator) -> dict:
    """The data iterator's counters (examples read, faults skipped), as data/... metrics."""
    stats = getattr(iterator, "stats", None)
    if stats is None:
        return {}
    return {f"data/{k}": v for k, v in stats().items() if isinstance(v, (int, float, np.number))}
