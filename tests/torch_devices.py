"""The devices the PyTorch writer's tests run on: the CPU always, and CUDA where a GPU is present.

CI has no GPU, so there the CUDA cases are not collected at all (no skip
to mistake for a pass); on a GPU machine the same tests run on both.
"""

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
