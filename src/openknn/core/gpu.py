"""faiss on GPU (SageMaker's ``_num_gpus``): how many GPUs faiss sees, how many a job or an
endpoint uses, an index built there, and a model's index copied there for search.

The CPU index stays the model of record: ``model_algo-1`` is always a CPU index, so a model
trained on a GPU serves on a CPU and the other way round. Training builds on the GPU and
copies the result back; serving copies the loaded index to the GPU and searches there,
with the CPU copy answering what the GPU cannot. faiss has no GPU HNSW, so ``faiss.HNSW``
stays on the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from ..errors import ClientError
from .index import IndexConfig, empty, fill, nlist_of, raw_search

log = logging.getLogger(__name__)

AUTO = "auto"
GPU_INDEX_TYPES = ("faiss.Flat", "faiss.IVFFlat", "faiss.IVFPQ")
MAX_SELECTION = 2048  # faiss GPU's largest k and nprobe (getMaxKSelection)
# Sub-quantiser widths faiss's GPU IVFPQ scans without precomputed tables; others need them.
NO_PRECOMPUTED_SUB_DIMS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 28, 32)
FLOAT32_TABLES_MAX_M = 48  # 256 float32 distances per sub-quantiser fill 48 KiB shared memory
INSTALL_HINT = ("install faiss's GPU build: pip uninstall -y faiss-cpu && "
                "pip install --force-reinstall faiss-gpu-cu12 (see docs/gpu.md)")


def gpu_build() -> bool:
    """Whether the installed faiss is the GPU build."""
    return hasattr(faiss, "StandardGpuResources")


def visible() -> int:
    """GPUs faiss can use: 0 without the GPU build or a device."""
    get = getattr(faiss, "get_num_gpus", None)
    if get is None:
        return 0
    try:
        return int(get())
    except Exception:  # a GPU build without a driver may raise here
        return 0


GPU_INSTANCE_PREFIXES = ("ml.p", "ml.g")  # SageMaker's GPU instance families


def for_instance_type(instance_type: str) -> int | str:
    """What a SageMaker instance type means for ``_num_gpus`` / ``--gpus``: GPU families
    (ml.p*, ml.g*) and ``local_gpu`` use a GPU where faiss sees one; CPU types and ``local``
    none, so a notebook's CPU and GPU endpoints compare as they do on SageMaker."""
    gpu_type = instance_type == "local_gpu" or instance_type.startswith(GPU_INSTANCE_PREFIXES)
    return AUTO if gpu_type else 0


def resolve(request: int | str, index_type: str, available: int, built: bool,
            name: str = "_num_gpus") -> int:
    """How many GPUs to use (0 or 1) for ``request``: ``'auto'`` takes one where faiss sees
    one and the index type has a GPU implementation; a count asks for it and fails clearly
    where it cannot be had. k-NN uses a single GPU, as SageMaker does."""
    if request == AUTO:
        return 1 if available > 0 and index_type in GPU_INDEX_TYPES else 0
    count = int(request)
    if count == 0:
        return 0
    if index_type not in GPU_INDEX_TYPES:
        raise ClientError(f"{name}={count}: faiss has no GPU implementation of {index_type}; "
                          f"set {name}=0 or 'auto' (which keeps it on the CPU), or use one of "
                          f"{', '.join(GPU_INDEX_TYPES)}")
    if not built:
        raise ClientError(f"{name}={count}: the installed faiss is the CPU build; "
                          f"{INSTALL_HINT}, or set {name}=0 or 'auto'")
    if available < 1:
        raise ClientError(f"{name}={count}: faiss sees no GPU (check nvidia-smi and "
                          f"CUDA_VISIBLE_DEVICES), or set {name}=0 or 'auto'")
    if count > 1:
        log.info("%s=%d: k-NN uses a single GPU (GPU 0), as SageMaker does", name, count)
    return 1


_RESOURCES: list[Any] = []  # one StandardGpuResources, alive as long as the process


def _resources() -> Any:
    if not _RESOURCES:
        _RESOURCES.append(faiss.StandardGpuResources())
    return _RESOURCES[0]


def cloner_options(index: Any) -> Any:
    """faiss's cloner options for ``index``: IVFPQ settings the GPU kernels need."""
    co = faiss.GpuClonerOptions()
    if isinstance(index, faiss.IndexIVFPQ):
        m = int(index.pq.M)
        co.useFloat16 = m > FLOAT32_TABLES_MAX_M
        co.usePrecomputed = int(index.d) // m not in NO_PRECOMPUTED_SUB_DIMS
    return co


def clone_to_gpu(index: Any) -> Any:
    """A copy of a CPU index (trained or not) on GPU 0."""
    return faiss.index_cpu_to_gpu(_resources(), 0, index, cloner_options(index))


def clone_to_cpu(index: Any) -> Any:
    return faiss.index_gpu_to_cpu(index)


def _why(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _gpu_step_failed(exc: BaseException, strict: bool, name: str, step: str,
                     instead: str) -> None:
    """A GPU step faiss refused: an error where a GPU count was asked for (``strict``),
    otherwise a warning quoting faiss, and the caller carries on on the CPU."""
    if strict:
        raise ClientError(f"{name}: {step} failed: {_why(exc)}; set {name}=0 or 'auto'") from exc
    log.warning("%s failed (%s); %s", step[:1].upper() + step[1:], _why(exc), instead)


@dataclass
class GpuIndex:
    """Stands in for a faiss index in ``openknn.core.search.search``: searches the GPU copy, and
    the CPU index where the GPU cannot answer (an nprobe or k over faiss's GPU limit, rows
    whose probed lists held fewer than k points), so answers follow the CPU rules."""

    cpu: Any
    device: Any

    @property
    def ntotal(self) -> int:
        return int(self.cpu.ntotal)

    @property
    def d(self) -> int:
        return int(self.cpu.d)

    def search_raw(self, queries: np.ndarray, k: int, nprobe: int,
                   ) -> tuple[np.ndarray, np.ndarray]:
        nlist = nlist_of(self.cpu)
        if nlist is not None:
            nprobe = min(nprobe, nlist)
        if k > MAX_SELECTION or (nlist is not None and nprobe > MAX_SELECTION):
            return raw_search(self.cpu, queries, k, nprobe)
        params = None if nlist is None else faiss.SearchParametersIVF(  # type: ignore[call-arg]
            nprobe=nprobe)
        dist, ids = self.device.search(queries, k, params=params)
        short = (ids < 0).any(axis=1)
        if short.any():
            d2, i2 = raw_search(self.cpu, np.ascontiguousarray(queries[short]), k, nprobe)
            dist[short], ids[short] = d2, i2
        return dist, ids


def build(vectors: np.ndarray, k: int, config: IndexConfig, seed: int, gpus: int,
          strict: bool, center: np.ndarray | None = None) -> tuple[Any, GpuIndex | None]:
    """The CPU index of ``vectors``, trained and filled on the GPU when ``gpus`` is 1, and
    the GPU copy to search it with. A GPU failure is an error when ``strict`` (a count was
    asked for); otherwise the index is built on the CPU, with a warning saying why."""
    index, x = empty(vectors, k, config, center)
    if gpus:
        try:
            device = clone_to_gpu(index)
            fill(device, x, seed)
            cpu = clone_to_cpu(device)
            log.info("Built %s on GPU 0", config.index_type)
            return cpu, GpuIndex(cpu, device)
        except (RuntimeError, MemoryError) as exc:  # faiss raises RuntimeError
            _gpu_step_failed(exc, strict, "_num_gpus", f"building {config.index_type} on the "
                             "GPU", "building on the CPU instead")
            index, x = empty(vectors, k, config, center)
    fill(index, x, seed)
    return index, None


def attach(index: Any, index_type: str, request: int | str,
           name: str = "--gpus") -> GpuIndex | None:
    """A GPU copy of a loaded CPU index to search with, or None to search on the CPU."""
    strict = request != AUTO
    if resolve(request, index_type, visible(), gpu_build(), name) == 0:
        return None
    try:
        device = clone_to_gpu(index)
    except (RuntimeError, MemoryError) as exc:
        _gpu_step_failed(exc, strict, name, f"copying the {index_type} index to the GPU",
                         "searching on the CPU")
        return None
    log.info("Searching %s on GPU 0", index_type)
    return GpuIndex(index, device)


def describe(searcher: Any) -> str:
    """Where a model searches, for logs and metrics."""
    return "GPU 0" if isinstance(searcher, GpuIndex) else "CPU"
