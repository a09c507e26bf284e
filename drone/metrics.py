"""The heartbeat's metrics: what a pilot needs to judge a box at a glance.

Every field is optional on the wire; a field that cannot be read is left out
rather than guessed. GPUs come from NVML (nvidia-ml-py) when it is installed,
else from ``nvidia-smi``; a box without NVIDIA GPUs simply has no ``gpus``.

Reading the GPUs never holds up the drone's event loop: ``nvidia-smi`` runs as
an asyncio subprocess (killed after ``SMI_TIMEOUT``; a wedged driver can hang it
for minutes) and NVML in a thread, while output shipping, cancels and uploads go
on. Only the first heartbeat waits for the first reading, so a drone reports its
GPUs from the start; after that a heartbeat carries the last reading and a
fresh one is taken in the background every ``GPU_REFRESH`` seconds.

On Linux the host figures are read from ``/proc`` and ``statvfs`` directly, the
way psutil reads them there, so that an idle drone does not load psutil for
five numbers (docs/drone.md, "Memory"); elsewhere psutil reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, Final, Protocol

GPU_REFRESH: Final = 10.0  # seconds; nvidia-smi costs a process start
SMI_TIMEOUT: Final = 10.0  # seconds nvidia-smi may take before it is killed


class Metrics:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._gpus: list[dict[str, Any]] | None = None
        self._gpus_at: float | None = None  # when the last reading was started
        self._read_once = False
        self._reading: asyncio.Task[None] | None = None
        self._gpu_source: str | None = _gpu_source()
        self.host: Host = ProcHost() if os.path.exists("/proc/stat") else PsutilHost()
        with contextlib.suppress(Exception):
            self.host.cpu_percent()  # primes the counter: the next call measures since now

    async def collect(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            out["cpu_percent"] = self.host.cpu_percent()
            out["cpu_count"] = os.cpu_count() or 0
        with contextlib.suppress(OSError):
            out["load"] = [round(x, 2) for x in os.getloadavg()]
        with contextlib.suppress(Exception):
            out["mem_total"], out["mem_used"] = self.host.memory()
        with contextlib.suppress(OSError):
            disk = os.statvfs(self.data_dir)
            out["disk_total"] = disk.f_blocks * disk.f_frsize
            out["disk_free"] = disk.f_bavail * disk.f_frsize
        with contextlib.suppress(Exception):
            out["uptime"] = int(time.time() - self.host.boot_time())
        gpus = await self.gpus()
        if gpus:
            out["gpus"] = gpus
        return out

    async def gpus(self) -> list[dict[str, Any]] | None:
        """The last GPU reading; a new one starts in the background once this one is stale."""
        if self._gpu_source is None:
            return None
        now = time.monotonic()
        if self._reading is None and (self._gpus_at is None
                                      or now - self._gpus_at > GPU_REFRESH):
            self._gpus_at = now
            self._reading = asyncio.get_running_loop().create_task(self._read())
        if self._reading is not None and not self._read_once:
            # shielded: a poll cancelled meanwhile (shutdown) must not leave the reading
            # half done; it is the reading's own timeout that bounds this wait
            await asyncio.shield(self._reading)
        return self._gpus

    async def _read(self) -> None:
        try:
            if self._gpu_source == "nvml":
                self._gpus = await asyncio.to_thread(_nvml_gpus)
            else:
                self._gpus = await _smi_gpus(SMI_TIMEOUT)
        except Exception:
            self._gpus = None
        finally:
            self._read_once = True
            self._reading = None


class Host(Protocol):
    def cpu_percent(self) -> float: ...

    def memory(self) -> tuple[int, int]: ...  # total, used (total - available), bytes

    def boot_time(self) -> float: ...


class ProcHost:
    """Linux: the figures psutil would give, from /proc/stat and /proc/meminfo."""

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None  # (busy, total) jiffies at the last call
        self._boot: float | None = None

    def cpu_percent(self) -> float:
        """Busy share of all CPUs since the last call (psutil.cpu_percent(interval=None))."""
        busy, total = _cpu_times()
        last, self._last = self._last, (busy, total)
        if last is None or total <= last[1]:
            return 0.0
        return round(100.0 * max(0, busy - last[0]) / (total - last[1]), 1)

    def memory(self) -> tuple[int, int]:
        fields: dict[str, int] = {}
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                key, _, rest = line.partition(b":")
                if key in (b"MemTotal", b"MemAvailable"):
                    fields[key.decode()] = int(rest.split()[0]) * 1024
        total = fields["MemTotal"]
        return total, total - fields["MemAvailable"]

    def boot_time(self) -> float:
        if self._boot is None:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        self._boot = float(line.split()[1])
                        break
                else:
                    raise OSError("no btime in /proc/stat")
        return self._boot


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the ``cpu`` line, counted as psutil counts them: guest time
    is already in user time, and idle and iowait are not busy."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    fields += [0] * (10 - len(fields))
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total


class PsutilHost:
    """Elsewhere: psutil, imported when the drone starts there."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil

    def cpu_percent(self) -> float:
        return float(self._psutil.cpu_percent(interval=None))

    def memory(self) -> tuple[int, int]:
        memory = self._psutil.virtual_memory()
        return memory.total, memory.total - memory.available

    def boot_time(self) -> float:
        return float(self._psutil.boot_time())


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


async def _smi_gpus(timeout: float) -> list[dict[str, Any]]:
    """``nvidia-smi`` without blocking the loop; killed when it takes longer than ``timeout``
    (or when the drone stops meanwhile); a failure or a time-out is no reading."""
    process = await asyncio.create_subprocess_exec(
        "nvidia-smi", f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(asyncio.CancelledError):
            await process.wait()  # reaped, its pipes closed, even when the drone is stopping
        raise
    if process.returncode != 0:
        raise OSError(f"nvidia-smi exited with {process.returncode}")
    return parse_smi(out.decode("utf-8", "replace"))
