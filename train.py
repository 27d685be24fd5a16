"""Train CLIP.

    python train.py --config configs/NAME.py[:ARG] --workdir DIR [--config.key=value ...]

Multi-host: on a TPU pod slice or under SLURM (more than one task) jax.distributed
starts from the environment; elsewhere pass --coordinator_address host:port
--num_processes N --process_id I on every host.  A workdir that holds checkpoints is
resumed from the newest one.
"""
import logging

from absl import app, flags
from ml_collections import config_flags

from clip_jax.multihost_flags import join_from_flags

flags.DEFINE_string("workdir", None, "where checkpoints and metrics go", required=True)
flags.DEFINE_enum("host_allocator", None, ["auto", "retain", "system"],
                  "retain: malloc reuses freed memory instead of faulting in fresh pages every step "
                  "(clip_jax/host.py); auto (default, or $CLIP_JAX_HOST_ALLOCATOR): retain on CPU-only machines")
config_flags.DEFINE_config_file("config", None, "training config file", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.config is None:
        raise app.UsageError("--config is required, e.g. --config configs/demo.py")
    logging.getLogger().setLevel(logging.INFO)
    from clip_jax.host import configure_allocator

    configure_allocator(FLAGS.host_allocator)  # before any thread starts
    from clip_jax.trainer import train

    join_from_flags()
    train(FLAGS.config, FLAGS.workdir)
    import jax

    from clip_jax.train_metrics import summary

    if jax.process_index() == 0:
        print(summary(FLAGS.workdir))


if __name__ == "__main__":
    app.run(main)
