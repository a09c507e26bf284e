"""The heartbeat's metrics: what a pilot needs to judge a box at a glance.

Every field is optional on the wire; a field that cannot be read is left out
rather than guessed. GPUs come from NVML (nvidia-ml-py) when it is installed,
else from ``nvidia-smi``; a box without NVIDIA GPUs simply has no ``gpus``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Final

import psutil

GPU_REFRESH: Final = 10.0  # seconds; nvidia-smi costs a process start


class Metrics:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._gpus: list[dict[str, Any]] | None = None
        self._gpus_at = 0.0
        self._gpu_source: str | None = _gpu_source()
        psutil.cpu_percent(interval=None)  # primes the counter: the next call measures since now

    def collect(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            out["cpu_percent"] = psutil.cpu_percent(interval=None)
            out["cpu_count"] = psutil.cpu_count() or 0
        with contextlib.suppress(OSError):
            out["load"] = [round(x, 2) for x in os.getloadavg()]
        with contextlib.suppress(Exception):
            memory = psutil.virtual_memory()
            out["mem_total"] = memory.total
            out["mem_used"] = memory.total - memory.available
        with contextlib.suppress(OSError):
            disk = psutil.disk_usage(str(self.data_dir))
            out["disk_total"] = disk.total
            out["disk_free"] = disk.free
        with contextlib.suppress(Exception):
            out["uptime"] = int(time.time() - psutil.boot_time())
        gpus = self.gpus()
        if gpus:
            out["gpus"] = gpus
        return out

    def gpus(self) -> list[dict[str, Any]] | None:
        if self._gpu_source is None:
            return None
        now = time.monotonic()
        if self._gpus is None or now - self._gpus_at > GPU_REFRESH:
            self._gpus_at = now
            try:
                self._gpus = _nvml_gpus() if self._gpu_source == "nvml" else _smi_gpus()
            except Exception:
                self._gpus = None
        return self._gpus


def _gpu_source() -> str | None:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        return "nvml"
    except Exception:  # noqa: S110 - no NVML is the common case; nvidia-smi is next
        pass
    return "smi" if shutil.which("nvidia-smi") else None


def _nvml_gpus() -> list[dict[str, Any]]:
    import pynvml  # type: ignore[import-not-found]

    gpus = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        gpus.append({
            "index": index,
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "util": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
            "mem_used": int(memory.used),
            "mem_total": int(memory.total),
            "temperature": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
        })
    return gpus


SMI_QUERY: Final = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu"


def parse_smi(text: str) -> list[dict[str, Any]]:
    """``nvidia-smi --format=csv,noheader,nounits`` lines → GPU dicts (MiB → bytes)."""
    gpus = []
    for line in text.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 6:
            continue

        def number(value: str) -> int | None:
            try:
                return int(float(value))
            except ValueError:
                return None

        mem_used, mem_total = number(fields[3]), number(fields[4])
        gpus.append({
            "index": number(fields[0]),
            "name": fields[1],
            "util": number(fields[2]),
            "mem_used": mem_used * 1024 * 1024 if mem_used is not None else None,
            "mem_total": mem_total * 1024 * 1024 if mem_total is not None else None,
            "temperature": number(fields[5]),
        })
    return gpus


def _smi_gpus() -> list[dict[str, Any]]:
    result = subprocess.run(
        ["nvidia-smi", f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, timeout=10, check=True,
    )
    return parse_smi(result.stdout)
