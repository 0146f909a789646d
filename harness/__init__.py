"""Measure Wan 2.1 text-to-video presets: time, quality, and the fastest preset that keeps quality."""

import logging
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR.parent / "conf"  # the Hydra config tree beside the package

# ${pkg:toy/weights/wan} in a config names a folder shipped inside the package.
if not OmegaConf.has_resolver("pkg"):
    OmegaConf.register_new_resolver("pkg", lambda relative: str(PACKAGE_DIR / relative))

# torchao (the quantization lever) registers enums with torch's pytree on import, and torch warns about that
# deprecation on every run, twice: noise to anyone reading a run's output, nothing they can act on.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
