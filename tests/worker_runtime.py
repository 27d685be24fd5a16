"""Starting JAX in a worker process of the multi-process tests: simulated CPU devices and,
for several processes, jax.distributed over gloo on localhost."""
import os


def start_jax(devices: int, num_processes: int, process_id: int, port: int):
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    import jax

    if num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id)
    return jax
