"""Measure Wan 2.1 text-to-video presets: time, quality, and the fastest preset that keeps quality."""

import logging
from pathlib import Path

from omegaconf import OmegaConf

from harness import schema

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR.parent / "conf"  # the Hydra config tree beside the package

# ${pkg:toy/weights/wan} in a config names a folder shipped inside the package.
if not OmegaConf.has_resolver("pkg"):
    OmegaConf.register_new_resolver("pkg", lambda relative: str(PACKAGE_DIR / relative))

schema.register()  # the config groups' types, before any config is composed

# torchao (the quantization lever; diffusers imports it whenever it is installed) says on every import that its
# CUDA kernels do not load on a CPU build of torch, and torch warns about its pytree registrations: noise to
# anyone reading a run's output, nothing they can act on (a lever torchao cannot run is refused in one line).
for _noisy in ("torch.utils._pytree", "torchao", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)
