"""The one CLIP trainer: sharded state, a jitted train step, and the loop around it.

Flow: config -> mesh and model -> abstract state -> shardings from regex rules ->
state created (or restored) already sharded under jit -> for each step: a host-local
batch from the data iterator becomes a global array, the donated state is updated ->
metrics, checkpoints (with the data position) and a save on SIGTERM.

Losses are pluggable by name (`config.loss`); everything else is shared.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import queue
import signal
import threading
import time
from typing import Any, Callable, Iterator

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from clip_jax import losses
from clip_jax.checkpoints import Checkpointer, abstract_with_shardings, meta_for
from clip_jax.flops import train_step_flops
from clip_jax.gradients import make_grad_fn
from clip_jax.metrics import MetricsWriter, peak_flops_per_device
from clip_jax.models import LOGIT_SCALE_INIT, LOGIT_SCALE_MAX, create_model
from clip_jax.optim import make_optimizer
from clip_jax.sharding import (
    batch_devices,
    global_batch,
    make_mesh,
    replicated,
    tree_shardings,
)


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


@dataclasses.dataclass
class Setup:
    """Everything derived from the config before any array exists."""

    config: ml_collections.ConfigDict
    model: Any
    mesh: Any
    optimizer: Any
    lr_schedule: Callable
    total_steps: int
    abstract_state: TrainState
    state_shardings: TrainState
    local_batch_size: int
    meta: dict
    init_state: Callable | None = None  # rng -> TrainState, jitted with the state shardings


def total_steps_of(config) -> int:
    given = {k: config.get(k, 0) for k in ("total_steps", "total_examples", "epochs")}
    chosen = [k for k, v in given.items() if v]
    if len(chosen) != 1:
        raise ValueError(f"set exactly one of total_steps, total_examples, epochs (> 0); got {given}")
    if chosen == ["total_steps"]:
        return int(config.total_steps)
    if chosen == ["total_examples"]:
        return math.ceil(config.total_examples / config.batch_size)
    examples = config.data.get("num_examples", 0)
    if not examples:
        raise ValueError("epochs needs config.data.num_examples (the training set size)")
    return math.ceil(config.epochs * examples / config.batch_size)


def validate(config, devices: int, processes: int) -> None:
    """Checks that must fail before anything compiles."""
    if config.batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {config.batch_size}")
    if config.batch_size % devices:
        raise ValueError(
            f"global batch_size {config.batch_size} is not divisible by the {devices} devices of the batch axes; "
            f"use a multiple of {devices}"
        )
    if config.batch_size % processes:
        raise ValueError(f"global batch_size {config.batch_size} is not divisible by {processes} processes")
    optim = config.optim
    for key in ("lr", "wd", "eps", "grad_clip", "warmup_steps"):
        if optim.get(key, 0) < 0:
            raise ValueError(f"optim.{key} must be >= 0; got {optim.get(key)}")
    for key in ("b1", "b2"):
        if not 0 <= optim[key] < 1:
            raise ValueError(f"optim.{key} must be in [0, 1); got {optim[key]}")
    steps = config.get("accumulation_steps", 1)
    if steps < 1 or config.batch_size % (steps * devices):
        raise ValueError(
            f"accumulation_steps {steps} must be >= 1 and divide the global batch {config.batch_size} into "
            f"micro-batches divisible by the {devices} devices"
        )
    if config.loss not in losses.LOSSES:
        raise ValueError(f"loss {config.loss!r} unknown; valid: {sorted(losses.LOSSES)}")
    if config.get("evals"):
        from clip_jax.evaluation.runner import validate as validate_evals

        validate_evals(config.evals)
    if config.on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"on_nonfinite {config.on_nonfinite!r} unknown; valid: 'stop', 'skip'")


def _temperature_options(config) -> dict:
    """Initial temperature and bias: OpenAI's 1/0.07 and no bias for softmax losses,
    SigLIP's 10 and -10 for sigmoid losses, unless the config sets them."""
    sigmoid = config.loss in losses.SIGMOID_LOSSES
    scale = config.get("logit_scale_init", None)
    bias = config.get("logit_bias_init", None)
    options = {"logit_scale_init": scale if scale is not None else (math.log(10.0) if sigmoid else LOGIT_SCALE_INIT)}
    if sigmoid:
        options["logit_bias_init"] = bias if bias is not None else -10.0
    return options


def build(config: ml_collections.ConfigDict) -> Setup:
    mesh = make_mesh([tuple(axis) for axis in config.mesh])
    validate(config, batch_devices(mesh), jax.process_count())
    model = create_model(config.model, dtype=config.get("compute_dtype", "float32"),
                         remat=config.get("remat", False), patch_dropout=config.get("patch_dropout", 0.0),
                         **_temperature_options(config))
    if model.patch_dropout and model.config.vision.is_resnet:
        raise ValueError(f"patch_dropout={model.patch_dropout} needs a ViT; {config.model} is a ResNet")
    steps = total_steps_of(config)
    size = model.config.vision.image_size
    images = jnp.zeros((1, size, size, 3), jnp.float32)
    tokens = jnp.zeros((1, model.config.text.context_length), jnp.int32)
    abstract_variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, tokens)
    optimizer, lr = make_optimizer(config.optim, abstract_variables["params"], steps)

    def init_state(rng):
        variables = model.init(rng, images, tokens)
        params = variables["params"]
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
    meta = meta_for(config.model, model.config)
    return Setup(config, model, mesh, optimizer, lr, steps, abstract, shardings,
                 config.batch_size // jax.process_count(), meta,
                 init_state=jax.jit(init_state, out_shardings=shardings))


def make_train_step(setup: Setup, model=None):
    """The jitted step; `model` defaults to the configured one (the unmasked tuning
    phase of patch dropout passes a copy without it)."""
    config, mesh = setup.config, setup.mesh
    model = model or setup.model
    grad_fn = make_grad_fn(model, config.loss, mesh, config.get("accumulation_steps", 1))

    def step_fn(state: TrainState, batch):
        rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), state.step)  # same on resume
        loss, metrics, batch_stats, grads = grad_fn(state.params, state.batch_stats, batch, rng)
        updates, opt_state = setup.optimizer.update(grads, state.opt_state, state.params)
        params = flax.core.unfreeze(jax.tree.map(lambda p, u: p + u, state.params, updates))
        # The paper's cap: the logits are never scaled by more than 100.
        params["logit_scale"] = jnp.clip(params["logit_scale"], 0.0, LOGIT_SCALE_MAX)
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads)))
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = TrainState(
            step=state.step + 1,
            # A non-finite update is never applied: in "stop" mode the host raises at the
            # next check, in "skip" mode training goes on from the last finite state.
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
            "lr": setup.lr_schedule(state.step),
            "nonfinite_updates": new_state.nonfinite_count,
        }
        return new_state, metrics

    return jax.jit(step_fn, in_shardings=(setup.state_shardings, None),
                   out_shardings=(setup.state_shardings, replicated(mesh)), donate_argnums=(0,))


class Prefetcher:
    """Reads host batches ahead on a thread and turns them into global arrays.

    Each item carries the iterator position *after* its batch, so the checkpointed
    position is that of the batches actually consumed, not of those read ahead.
    """

    def __init__(self, iterator, mesh, depth: int = 2, transform: Callable[[dict], dict] | None = None):
        self._iterator = iterator
        self._mesh = mesh
        self._transform = transform or (lambda batch: batch)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                batch = next(self._iterator)
                position = self._iterator.get_state()
                item = (global_batch(self._transform(batch), self._mesh), position)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._queue.put(error)

    def next(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.1)


def default_data(setup: Setup, seed: int):
    """The configured training iterator for this host."""
    from clip_jax import data

    config = setup.config
    return data.train_iterator(
        config.data.train,
        batch_size=setup.local_batch_size,
        image_size=setup.model.config.vision.image_size,
        seed=seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        context_length=setup.model.config.text.context_length,
        **config.data.get("options", {}),
    )


def _initial_state(setup: Setup, checkpointer: Checkpointer):
    """(state, data position or None, start step): resumed, fine-tuned or fresh."""
    config = setup.config
    latest = checkpointer.latest_step()
    if latest is not None:
        checkpointer.check_compatible(latest, setup.meta)
        abstract = abstract_with_shardings(setup.abstract_state, setup.state_shardings)
        state, position = checkpointer.restore(latest, abstract)
        logging.info("resumed from %s at step %d", checkpointer.directory, latest)
        return state, position
    # 'rbg' keys compile the many initialisers ~2.5x faster than threefry.
    state = setup.init_state(jax.random.key(config.seed, impl="rbg"))
    if config.get("init_from"):
        from clip_jax.convert import read_checkpoint

        model_config, variables = read_checkpoint(config.init_from)
        if model_config != setup.model.config:
            raise ValueError(f"init_from {config.init_from} holds {model_config}, but the config trains "
                             f"{config.model}: {setup.model.config}")
        params = jax.device_put(variables["params"], setup.state_shardings.params)
        batch_stats = jax.device_put(variables.get("batch_stats", {}), setup.state_shardings.batch_stats)
        state = state.replace(params=params, batch_stats=batch_stats)
        logging.info("initialised from %s", config.init_from)
    return state, None


def train(config: ml_collections.ConfigDict, workdir: str,
          data_fn: Callable[[Setup, int], Iterator] | None = None) -> TrainState:
    """Train until config's length, resuming from `workdir` if it holds a checkpoint."""
    setup = build(config)
    checkpointer = Checkpointer(f"{workdir}/checkpoints", keep=config.keep_checkpoints,
                                asynchronous=config.get("async_checkpoints", True))
    state, position = _initial_state(setup, checkpointer)
    iterator = (data_fn or default_data)(setup, config.seed)
    if position is not None:
        iterator.set_state(position)
    step_model = setup.model
    train_step = make_train_step(setup)
    unmasked_from = setup.total_steps - config.get("patch_dropout_unmasked_steps", 0) + 1
    if not setup.model.patch_dropout:
        unmasked_from = setup.total_steps + 1
    writer = MetricsWriter(workdir, setup.total_steps, enabled=jax.process_index() == 0)
    stop_requested = threading.Event()
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop_requested.set()) \
        if threading.current_thread() is threading.main_thread() else None

    start_step = int(state.step)
    peak = peak_flops_per_device(config.get("peak_flops", 0.0))
    # (compiled step, model FLOPs per device) by text length: trimming gives a few shapes.
    compiled_steps: dict[int, tuple[Any, float]] = {}
    prefetcher = Prefetcher(iterator, setup.mesh, transform=_text_trimmer(config, setup.mesh))
    last_good_checkpoint = checkpointer.latest_step()
    data_wait = 0.0
    window_start, window_steps = time.perf_counter(), 0
    try:
        for step in range(start_step + 1, setup.total_steps + 1):
            t0 = time.perf_counter()
            batch, position = prefetcher.next()
            t1 = time.perf_counter()
            if step == unmasked_from or (not compiled_steps and step > unmasked_from):
                # FLIP's final phase: the same parameters, every patch kept.
                step_model = setup.model.clone(patch_dropout=0.0)
                train_step = make_train_step(setup, step_model)
                compiled_steps = {}
                logging.info("patch dropout off from step %d", step)
            text_length = batch["tokens"].shape[1]
            if text_length not in compiled_steps:
                compile_start = time.perf_counter()
                compiled_steps[text_length] = (
                    train_step.lower(state, batch).compile(),
                    train_step_flops(step_model, config.batch_size, text_length) / jax.device_count(),
                )
                logging.info("compiled the train step for %d text positions in %.1fs",
                             text_length, time.perf_counter() - compile_start)
                window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
            compiled_step, flops_per_step = compiled_steps[text_length]
            state, metrics = compiled_step(state, batch)
            window_steps += 1
            data_wait += t1 - t0
            is_last = step == setup.total_steps
            log_now = step % config.log_every == 0 or is_last or step == start_step + 1
            save_now = step % config.checkpoint_every == 0 or is_last or stop_requested.is_set()
            if log_now or save_now:
                metrics = jax.device_get(metrics)
                _check_finite(state, config, last_good_checkpoint)
                elapsed = time.perf_counter() - window_start
                compute = elapsed - data_wait
                if log_now:
                    examples = window_steps * config.batch_size
                    step_time = elapsed / window_steps
                    metrics.update(
                        examples_per_s=examples / elapsed,
                        examples_per_s_per_device=examples / elapsed / jax.device_count(),
                        data_wait_s=data_wait / window_steps,
                        compute_s=compute / window_steps,
                        step_time_s=step_time,
                    )
                    if peak and flops_per_step:
                        metrics["mfu"] = flops_per_step / step_time / peak
                    metrics.update(_data_stats(iterator))
                    writer.write(step, metrics)
                    window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
                if save_now:
                    checkpointer.save(step, state, position, setup.meta, force=True)
                    last_good_checkpoint = step
            if config.get("evals") and (step % config.eval_every == 0 or is_last):
                results = _evaluate(setup, state)
                writer.write(step, results)
                logging.info("step %d evaluation: %s", step, results)
            if stop_requested.is_set():  # SIGTERM may arrive at any point of the step
                if last_good_checkpoint != step:
                    _check_finite(state, config, last_good_checkpoint)
                    checkpointer.save(step, state, position, setup.meta, force=True)
                logging.warning("SIGTERM: saved step %d, exiting", step)
                break
    finally:
        prefetcher.close()
        if hasattr(iterator, "close"):  # release tf.data's Python readers before exit
            iterator.close()
        checkpointer.close()
        writer.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    return state


def _text_trimmer(config, mesh) -> Callable[[dict], dict] | None:
    """Cut each batch's tokens after its last EOT (`trim_after_eot`: the same loss and
    gradients, less text-tower work), where that is safe to do."""
    if not config.get("trim_text", True) or not _trimming_is_safe(mesh):
        return None
    from clip_jax.models.text import trim_after_eot

    return lambda batch: {**batch, "tokens": trim_after_eot(batch["tokens"])}


def _trimming_is_safe(mesh) -> bool:
    """One process (hosts would have to agree on the length of their slices), and not
    several simulated CPU devices: there XLA's CPU runtime deadlocked in a collective
    rendezvous with the trimmed step (configs/demo.py on a 4 x 2 data x fsdp mesh of
    8 host devices, 3 of 3 runs; the same run untrimmed passes)."""
    if jax.process_count() > 1:
        return False
    return mesh.devices.size == 1 or mesh.devices.flat[0].platform != "cpu"


def _evaluate(setup: Setup, state: TrainState) -> dict:
    from clip_jax.evaluation.runner import run_evals

    variables = {"params": state.params}
    if setup.model.config.vision.is_resnet:
        variables["batch_stats"] = state.batch_stats
    return run_evals(setup.model, variables, setup.config.evals)


def _check_finite(state: TrainState, config, last_good_checkpoint) -> None:
    first_bad = int(state.first_nonfinite_step)
    if first_bad >= 0 and config.on_nonfinite == "stop":
        raise NonFiniteLossError(
            f"loss or gradients became NaN/Inf at step {first_bad}; the update was not applied. "
            f"Last good checkpoint: step {last_good_checkpoint}. Set on_nonfinite='skip' to skip such updates."
        )


def _data_stats(iterator) -> dict:
    stats = getattr(iterator, "stats", None)
    if stats is None:
        return {}
    return {f"data/{k}": v for k, v in stats().items() if isinstance(v, (int, float, np.number))}
