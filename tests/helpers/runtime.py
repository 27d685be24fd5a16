"""Worker processes of the tests: the command that runs one (`worker`, from the repository
root), and starting JAX inside one (`start_jax`): simulated CPU devices and, for several
processes, jax.distributed over gloo on localhost."""
import os
import socket
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def worker(name: str, *args) -> list[str]:
    """The command of tests/workers/NAME.py as a module; run it with cwd=ROOT."""
    return [sys.executable, "-m", f"tests.workers.{name}", *map(str, args)]


def load_file(relative_path: str):
    """A repository script or config file (configs/, data/, ...) imported as a module by
    its path, as `train.py --config` and the tools' command lines read them."""
    from clip_jax.train_config import config_file

    return config_file(os.path.join(ROOT, relative_path))


def load_config(name: str, arg=None):
    """configs/NAME.py's get_config(arg)."""
    return load_file(os.path.join("configs", f"{name}.py")).get_config(arg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_jax(devices: int, num_processes: int, process_id: int, port: int):
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    import jax

    if num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id)
    return jax
