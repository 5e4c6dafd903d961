"""cuSPARSELt overheads the PyTorch wrapper leaves in: the library version, the algorithm id, the transposed result.

- Version: `torch.backends.cusparselt.version()` is cuSPARSELt's CUSPARSELT_VERSION, MAJOR*1000 + MINOR*100 +
  PATCH (0.6.2 -> 602, so 0.8.0 -> 800 and 0.8.1 -> 801). 0.8.0 has Hopper regressions fixed in 0.8.1: warn below.
- Algorithm: `torch._C._cusparselt.mm_search` (CUDA builds only; it returns alg id, split-k and split-k mode,
  and the older `torch._cslt_sparse_mm_search`, alg id only, is deprecated in its favour -- used only where the
  new one is missing) is run once per (weight shape, rows, dtypes) and cached for the process, so identical
  layers (24 BERT-large blocks) and reloads share it.
- Layout: `to_sparse_semi_structured` + F.linear goes through torch's `cusparselt_mm` op, which multiplies
  W @ x^T and returns [out, tokens] (a transposed view the next op copies) unless the class-wide
  `_FUSE_TRANSPOSE` flag is set; `DirectCusparseltKernel` calls `_cslt_sparse_mm(transpose_result=True)` with
  the bias in the epilogue and the searched alg id instead, for one weight, with no global flag.
Activations are padded to the kernel's row multiple (8 for fp16/bf16, 16 for fp8/int8) and the result narrowed,
a prefix view of a row-major tensor (no copy).
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

log = logging.getLogger("twofour.runtime.gpu")

MIN_GOOD_VERSION = 801  # 0.8.1
ROW_MULTIPLE: dict[torch.dtype, int] = {torch.float16: 8, torch.bfloat16: 8, torch.float8_e4m3fn: 16, torch.int8: 16}


def decode_version(version: int) -> tuple[int, int, int]:
    return version // 1000, version % 1000 // 100, version % 100


def version_problem(version: int | None) -> str | None:
    """Why this cuSPARSELt should be upgraded, or None when it is 0.8.1 or newer."""
    if version is None:
        return "this torch build has no cuSPARSELt"
    if version < MIN_GOOD_VERSION:
        major, minor, patch = decode_version(version)
        return (f"cuSPARSELt {major}.{minor}.{patch} is older than 0.8.1 (0.8.0 has Hopper 2:4 performance "
                f"regressions fixed in 0.8.1); 2:4 timings on this build understate the kernels")
    return None


def log_version() -> int | None:
    """Log (and return) the cuSPARSELt version torch loaded, warning when it is below 0.8.1."""
    cusparselt = getattr(torch.backends, "cusparselt", None)
    version = cusparselt.version() if cusparselt is not None and cusparselt.is_available() else None
    problem = version_problem(version)
    if problem is None and version is not None:
        log.info("cuSPARSELt %d.%d.%d", *decode_version(version))
    elif version is not None:
        log.warning("%s", problem)
    return version


def pad_rows(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """x [rows, k] zero-padded to a multiple of `multiple` rows (returned as is when it already is one)."""
    extra = (-x.shape[0]) % multiple
    return x if extra == 0 else torch.nn.functional.pad(x, (0, 0, 0, extra))


SearchKey = tuple[int, int, int, str, str]  # (out, in, padded rows, input dtype, output dtype)
Algorithm = tuple[int, int, int]  # (alg_id, split_k, split_k_mode): _cslt_sparse_mm's keyword arguments
DEFAULT_ALGORITHM: Algorithm = (0, 1, -1)
Search = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.dtype | None], "Algorithm | int"]


def _torch_search(packed: torch.Tensor, dense_b: torch.Tensor, alpha: torch.Tensor | None,
                  out_dtype: torch.dtype | None) -> Algorithm | int:
    binding = getattr(torch._C, "_cusparselt", None)
    if binding is not None and hasattr(binding, "mm_search"):
        alg_id, split_k, split_k_mode, _ = binding.mm_search(packed, dense_b, None, alpha, out_dtype, True)
        return int(alg_id), int(split_k), int(split_k_mode)
    return int(torch._cslt_sparse_mm_search(packed, dense_b, alpha=alpha, out_dtype=out_dtype,
                                            transpose_result=True))


def algorithm_kwargs(algorithm: Algorithm) -> dict[str, int]:
    alg_id, split_k, split_k_mode = algorithm
    return {"alg_id": alg_id, "split_k": split_k, "split_k_mode": split_k_mode}


class AlgorithmCache:
    """Algorithm per (shape, rows, dtypes), searched once per process. The search is injected for the tests (an
    int it returns is an alg id with the default split-k)."""

    def __init__(self, search: Search | None = None) -> None:
        self._search = search or _torch_search
        self._ids: dict[SearchKey, Algorithm] = {}
        self.searches = 0

    def alg_id(self, out_features: int, packed: torch.Tensor, dense_b: torch.Tensor, alpha: torch.Tensor | None,
               out_dtype: torch.dtype | None) -> Algorithm:
        in_features, rows = int(dense_b.shape[0]), int(dense_b.shape[1])
        key = (out_features, in_features, rows, str(dense_b.dtype), str(out_dtype))
        if key not in self._ids:
            self.searches += 1
            try:
                found = self._search(packed, dense_b, alpha, out_dtype)
                self._ids[key] = (found, 1, -1) if isinstance(found, int) else found
            except RuntimeError as exc:  # a search failure costs speed, not correctness: the default id
                log.warning("cuSPARSELt algorithm search failed for %s (%s); using alg id 0", key, exc)
                self._ids[key] = DEFAULT_ALGORITHM
        return self._ids[key]


PROCESS_ALGORITHMS = AlgorithmCache()  # the process-wide cache the runtime uses (built lazily, searches on GPU)


class DirectCusparseltKernel:
    """fp16/bf16 2:4 through `_cslt_sparse_mm` directly: row-major result, bias in the epilogue, searched alg id
    per row bucket (`prepare(rows)` at load; a call at an unprepared row count uses id 0)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, algorithms: AlgorithmCache | None = None,
                 compress: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 mm: Callable[..., torch.Tensor] | None = None) -> None:
        if weight.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"2:4 kernels run in float16/bfloat16 only, got {weight.dtype}")
        self.out_features = int(weight.shape[0])
        self.weight = (compress or torch._cslt_compress)(weight.contiguous())
        self.bias = bias
        self.multiple = ROW_MULTIPLE[weight.dtype]
        self._mm: Callable[..., torch.Tensor] = mm or torch._cslt_sparse_mm
        self._algorithms = algorithms or PROCESS_ALGORITHMS
        self._alg: dict[int, Algorithm] = {}

    def prepare(self, rows: int, example: torch.Tensor) -> None:
        """Search (or reuse) the alg id for calls of `rows` rows; `example` is any [rows, in] activation."""
        padded = pad_rows(example, self.multiple)
        self._alg[padded.shape[0]] = self._algorithms.alg_id(self.out_features, self.weight, padded.t(), None, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        padded = pad_rows(x, self.multiple)
        out = self._mm(self.weight, padded.t(), bias=self.bias, transpose_result=True,
                       **algorithm_kwargs(self._alg.get(int(padded.shape[0]), DEFAULT_ALGORITHM)))
        return out[:rows]
