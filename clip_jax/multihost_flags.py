"""The command-line flags that join a multi-host runtime, one definition for every entry
point that runs on several hosts (train.py, eval.py).

    python train.py ... --coordinator_address HOST0:PORT --num_processes N --process_id I

On a TPU pod slice or under SLURM (more than one task) none is needed: the runtime is
found in the environment.
"""
from absl import flags

flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for explicit multi-host runs")
flags.DEFINE_integer("num_processes", 0, "number of processes, with --coordinator_address")
flags.DEFINE_integer("process_id", -1, "this process's index, with --coordinator_address")
flags.DEFINE_integer("coordinator_timeout", 300, "seconds to wait for all processes to join before failing")
FLAGS = flags.FLAGS


def join_from_flags() -> None:
    """Join the runtime the flags (or the environment) name; nothing for one process."""
    from clip_jax.sharding import maybe_initialize_distributed

    maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                 FLAGS.coordinator_timeout)
