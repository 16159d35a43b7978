"""videopoet: data pipeline, tokenizers and trainer for a VideoPoet-style video LLM.

The repository's top-level folders are this package's subpackages (pipeline/ ->
videopoet.pipeline, tokenizers/ -> videopoet.tokenizers, ...). In a source checkout the repo
root is added to this package's search path so that the subpackages resolve to the folders
themselves; an installed wheel has them copied under videopoet/ instead.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_repo_root = _Path(__file__).resolve().parent.parent
if (_repo_root / "pyproject.toml").is_file() and (_repo_root / "trainer").is_dir():
    __path__.append(str(_repo_root))  # noqa: F821  (package __path__)
