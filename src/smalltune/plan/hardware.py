"""The memory the planner may plan with: a GPU's, the system's, or what the user says."""

from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = 1024**3

# Share of the device's memory a plan may fill: the CUDA context, the allocator's fragmentation and
# (on a CPU) the operating system and other programs need the rest.
USABLE = {"cuda": 0.9, "cpu": 0.75}


@dataclass
class Device:
    kind: str  # "cuda" or "cpu": decides precision choices and how activations are counted
    total: int  # bytes
    usable: int  # bytes a plan may fill
    source: str  # where the number came from, for the explanation
    bf16: bool  # whether bf16 autocast is a sensible choice on this device

    def to_dict(self) -> dict:
        return {**asdict(self), "total_gib": round(self.total / GIB, 2), "usable_gib": round(self.usable / GIB, 2)}


def detect_device(memory_gib: float | None = None) -> Device:
    """The device a plan targets: the first CUDA GPU, else this machine's RAM.

    ``memory_gib`` (``--device-memory``) replaces the detected amount, e.g. to plan on a laptop for
    a 24 GiB GPU (the same usable share applies); the device kind stays the detected one.

    >>> detect_device(16).usable / 2**30
    """
    kind, total, source, bf16 = "cpu", None, "", True  # CPUs with AVX512-BF16/AMX run bf16 autocast well
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            kind, total, bf16 = "cuda", props.total_memory, torch.cuda.is_bf16_supported()
            source = f"GPU 0 ({props.name})"
    except Exception:  # noqa: BLE001 - no working torch/CUDA simply means: plan for the CPU
        pass
    if total is None:
        import psutil

        total, source = psutil.virtual_memory().total, "system RAM (no CUDA GPU found)"
    if memory_gib is not None:
        total, source = int(memory_gib * GIB), f"--device-memory {memory_gib:g} GiB"
    usable = int(total * USABLE[kind])
    return Device(kind=kind, total=total, usable=usable, source=source, bf16=bf16)
