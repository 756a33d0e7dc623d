"""What the CUDA renderer knows about the GPU it renders for: plain data, with H100 defaults for rendering with no GPU."""
from __future__ import annotations
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CUDATarget:
  """What the renderer needs to know about a GPU. Defaults describe an H100, for rendering with no GPU."""
  arch: str = "sm_90"
  sm_count: int = 132
  max_shared: int = 227 * 1024

  @property
  def cc(self) -> int: return int("".join(ch for ch in self.arch.split("_")[1] if ch.isdigit()))

  @property
  def wgmma(self) -> bool:
    """Whether kernels may use sm_90's warpgroup MMAs: code compiled for sm_90a (which runs on compute capability 9.0 only)."""
    return self.arch == "sm_90a"


def target_of(device: Any) -> CUDATarget:
  """The target of an opened picograd Device (its `extra` holds arch, sm_count, max_shared), or the defaults."""
  extra = getattr(device, "extra", None) or {}
  d = CUDATarget()
  return CUDATarget(extra.get("arch", d.arch), extra.get("sm_count", d.sm_count), extra.get("max_shared", d.max_shared))
