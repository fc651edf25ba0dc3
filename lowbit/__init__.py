"""lowbit: generator, compiler and cycle-accurate simulator for low-bit DNN accelerators."""

from .config import PRESETS, AccelConfig, ConfigError, load_config, preset

__all__ = ["AccelConfig", "ConfigError", "PRESETS", "load_config", "preset", "__version__"]
__version__ = "0.1.0"
