"""Collection settings for the whole repository (the doctests of ``torchstn`` included)."""

import importlib.util
import os

import torch

# the Triton kernels import triton at module level; without it there is nothing to collect
collect_ignore = [] if importlib.util.find_spec("triton") else ["torchstn/native/triton_affine.py"]

# Without a GPU the Triton kernels run in Triton's interpreter, on CPU tensors. Triton reads the
# switch when its functions are decorated, and importing torchstn imports triton (through
# torch.library), so it is set here, before any test module imports anything.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
