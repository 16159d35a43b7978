"""videopoet: data pipeline, tokenizers, trainer and evaluation for a VideoPoet-style video LLM.

This folder (infra/) is the root package: how jobs run (configs, commands, tracking, the training
framework, the data-job engines) and the deployment assets. The other top-level folders are its
subpackages through pyproject.toml's package-dir mapping (pipeline/ -> videopoet.pipeline, ...).
"""

import sys as _sys
from importlib import machinery as _machinery
from importlib import util as _util
from pathlib import Path as _Path

__version__ = "0.1.0"

# tokenizers/ has no __init__.py so that it never shadows Hugging Face's `tokenizers` when the repo
# root is on sys.path (python -m pytest, python -c). A wheel holds it as videopoet/tokenizers/, a
# namespace portion Python finds; setuptools' editable finder cannot resolve a namespace
# subpackage, so in a source checkout that one portion is declared here.
_here = _Path(__file__).resolve().parent
_portion = _here.parent / "tokenizers"
if "videopoet.tokenizers" not in _sys.modules and not (_here / "tokenizers").is_dir() and (
    _here.parent / "pyproject.toml"
).is_file() and _portion.is_dir():
    _spec = _machinery.ModuleSpec("videopoet.tokenizers", None, is_package=True)
    _spec.submodule_search_locations = [str(_portion)]
    tokenizers = _sys.modules["videopoet.tokenizers"] = _util.module_from_spec(_spec)
