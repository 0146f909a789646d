"""Measure Wan 2.1 text-to-video presets: time, quality, and the fastest preset that keeps quality."""

from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR.parent / "conf"  # the Hydra config tree beside the package

# ${pkg:toy/weights/wan} in a config names a folder shipped inside the package.
if not OmegaConf.has_resolver("pkg"):
    OmegaConf.register_new_resolver("pkg", lambda relative: str(PACKAGE_DIR / relative))
