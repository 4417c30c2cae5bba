"""UnifiedGPUDetector: the GPU list. The agent's Rust chain answers (amd-smi, then NVML, then
the CPU); when it finds only the CPU, the torch fallbacks answer if torch sees a GPU
(`torch.hip`, then `torch.cuda`), with `utilization_percent` None."""

from __future__ import annotations

from typing import List, Optional, Tuple

from . import _native
from .schema import GpuList, GpuListEntry

MIB = 1024 * 1024


def _torch_gpus() -> Optional[Tuple[str, List[GpuListEntry]]]:
    try:
        import torch  # noqa: PLC0415 - optional, and heavy
    except Exception:  # noqa: BLE001 - no torch, or a broken one: no fallback
        return None
    for detector, api, gpu_type in (
        ("TorchROCmDetector", getattr(torch, "hip", None), "amd"),
        ("TorchCudaDetector", getattr(torch, "cuda", None), "nvidia"),
    ):
        try:
            if api is None or not api.is_available():
                continue
            gpus: List[GpuListEntry] = []
            for i in range(api.device_count()):
                props = api.get_device_properties(i)
                total = props.total_memory
                reserved = api.memory_reserved(i)
                gpus.append(
                    {
                        "index": i,
                        "name": props.name,
                        "gpu_type": gpu_type,
                        "total_memory_mb": total // MIB,
                        "used_memory_mb": reserved // MIB,
                        "free_memory_mb": (total - reserved) // MIB,
                        "utilization_percent": None,
                    }
                )
            return detector, gpus
        except Exception:  # noqa: BLE001 - a failing detector passes to the next
            continue
    return None


class UnifiedGPUDetector:
    """`get_gpu_list()` and `get_gpu_info(index)`; `detector_name` says which
    detector answered."""

    def __init__(self) -> None:
        listed = _native.gpu_list()
        self.detector_name: str = listed["detector"]
        self._gpus: List[GpuListEntry] = listed["gpus"]
        if self.detector_name == "CPUDetector":
            fallback = _torch_gpus()
            if fallback is not None:
                self.detector_name, self._gpus = fallback

    def get_gpu_list(self) -> List[GpuListEntry]:
        if self.detector_name in ("AMDSMIDetector", "NVMLDetector"):
            self._gpus = _native.gpu_list()["gpus"]  # fresh figures at every call
        return [g.copy() for g in self._gpus]

    def get_gpu_info(self, gpu_index: int = 0) -> GpuListEntry:
        for gpu in self.get_gpu_list():
            if gpu["index"] == gpu_index:
                return gpu
        raise IndexError(f"no GPU with index {gpu_index} (detector {self.detector_name})")

    def as_api_response(self) -> GpuList:
        """The `/api/management/gpus` body."""
        gpus = self.get_gpu_list()
        return {"gpus": gpus, "total": len(gpus), "detector": self.detector_name}
