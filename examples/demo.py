"""A tour of picograd's pipeline: build a lazy graph, look at its kernels, run them, check against numpy."""
import numpy as np
import picograd
from picograd import Tensor


def main() -> None:
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((256, 512)).astype(np.float32), rng.standard_normal((512, 128)).astype(np.float32)
  x, w = Tensor(a), Tensor(b)
  y = ((x @ w) * 0.5 + 1).relu().softmax(-1)
  print("lazy graph of y (nothing has run yet):")
  print(y.uop)
  for k in picograd.schedule(y):
    print(f"\nkernel {k.name}\n{k.ir}")
  ref = np.maximum((a @ b) * 0.5 + 1, 0)
  ref = np.exp(ref - ref.max(-1, keepdims=True)); ref /= ref.sum(-1, keepdims=True)
  print(f"\nmax |picograd - numpy| = {np.abs(y.numpy() - ref).max():.2e}")


if __name__ == "__main__":
  main()
