"""The host CPU, named in every bench figure: its model and whether it has AVX-512 (the
ratios against peers move with the vector width, so a figure without it cannot be compared)."""
from __future__ import annotations

import platform


def cpu_model() -> str:
    """e.g. "AMD EPYC 7B13 (AVX2, no AVX-512)" or "Intel(R) Xeon(R) Processor (AVX-512)"."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return f"{platform.processor() or 'unknown CPU'} (vector width unknown)"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor() or "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    width = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    return f"{name} ({width})"


if __name__ == "__main__":
    print(cpu_model())
