"""Where the files packaged with videopoet are: DeepSpeed JSONs and YAML configs, in a checkout or a wheel.

infra/deepspeed/*.json ships as package data of `videopoet`; configs/*.yaml ships as the data
package `videopoet.configs`. Both resolve through the import system, so an installed wheel finds
them as a source checkout does.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEEPSPEED_DIR = Path(__file__).resolve().parent / "deepspeed"


def config_dir() -> Path:
    """The folder of the packaged YAML configs (configs/ in a checkout)."""
    return Path(str(resources.files("videopoet.configs")))


def packaged_config(name_or_path: str) -> Path | None:
    """`configs/NAME.yaml`, `NAME.yaml` or `NAME` as a packaged YAML config, when it exists."""
    name = Path(name_or_path).name
    for candidate in (name, f"{name}.yaml"):
        path = config_dir() / candidate
        if path.suffix in (".yaml", ".yml") and path.is_file():
            return path
    return None
