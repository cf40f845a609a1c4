"""Fetch a model repository into the Hugging Face cache with huggingface_hub, with progress.

`plan_pull` asks the Hub for the repository's file list (sizes included), keeps the files vLLM
needs, fetches config.json alone and sizes the model with the estimator, so the caller can show
the fit verdict and check the disk before any weight is fetched. `download` then fetches the
missing files one by one with `hf_hub_download` (bytes reported to a callback, rate and ETA
computed here), records the snapshot with `snapshot_download` and checks every weight file (its
size against its safetensors header, its SHA-256 against the Hub's).

Cancel: set the event; the next progress tick (huggingface_hub reports every 10 MB) raises
`PullCancelled` inside the transfer. Resume: huggingface_hub 2.x deletes an unfinished file, so
each file is fetched with its own metadata call and HTTP transfer (`get_hf_file_metadata`,
`http_get` with a Range header) into <cache>/.vrampilot-partial/, kept across a cancel or a
crash, checked against the Hub's SHA-256 and moved into the cache's blobs/<etag>;
`hf_hub_download` then links it into the snapshot as it does its own downloads.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.models.catalog import Catalog, ModelEntry
from core.models.on_disk import (
    ALLOW_PATTERNS,
    IGNORE_PATTERNS,
    cached_snapshot,
    hf_cache_dir,
    repo_folder,
    safetensors_problem,
)

if TYPE_CHECKING:
    from core.models.estimator import Estimate
    from core.router.selection import HardwareState

# Kept free beyond the download itself: a full disk breaks more than the download.
DISK_MARGIN_BYTES = 256 * 1024**2


class PullError(Exception):
    """One sentence for the user; exit_code 2 for bad input or settings, 1 for a failure."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PullCancelled(PullError):
    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message, 130)


@dataclass(frozen=True)
class RepoFile:
    name: str
    size: int
    sha256: str | None  # LFS files: the Hub's SHA-256 of the content


@dataclass(frozen=True)
class PullPlan:
    """What a pull would fetch: the commit, the files vLLM needs and the bytes still missing."""

    repo_id: str
    commit: str
    files: tuple[RepoFile, ...]
    missing: tuple[RepoFile, ...]  # not yet in the cache's snapshot of this commit
    config_dir: Path  # the snapshot folder holding config.json (fetched alone)
    cache_dir: Path
    endpoint: str

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def missing_bytes(self) -> int:
        return sum(f.size for f in self.missing)

    @property
    def snapshot_dir(self) -> Path:
        return repo_folder(self.repo_id, self.cache_dir) / "snapshots" / self.commit


@dataclass(frozen=True)
class Progress:
    """Bytes done of the bytes to fetch in this run, the rate over the last seconds, the ETA."""

    done_bytes: int
    total_bytes: int
    rate_bytes_per_s: float
    eta_s: float | None
    file: str
    files_done: int
    files_total: int

    def as_dict(self) -> dict[str, Any]:
        return {"event": "progress", "done_bytes": self.done_bytes,
                "total_bytes": self.total_bytes, "rate_bytes_per_s": round(self.rate_bytes_per_s),
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1), "file": self.file,
                "files_done": self.files_done, "files_total": self.files_total}


ProgressCallback = Callable[[Progress], None]


def endpoint() -> str:
    """The Hub to fetch from: HF_ENDPOINT, read now (huggingface_hub reads it once at import)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def token() -> str | None:
    """HF_TOKEN from the environment, else the system keyring (service "huggingface") when the
    keyring package is installed, else None (huggingface_hub then uses its own saved token)."""
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    try:
        import keyring  # optional
    except ImportError:
        return None
    try:
        found = keyring.get_password("huggingface", "token")
    except Exception:  # noqa: BLE001 - a broken keyring backend must not stop a public download
        return None
    return str(found) if found else None


def _explain(exc: BaseException, repo_id: str, where: str) -> PullError:
    """One sentence for a failure of huggingface_hub or of the disk."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, PullError):
        return exc
    if isinstance(exc, GatedRepoError):
        return PullError(f"{repo_id} is gated: accept its terms on {where}/{repo_id} and set "
                         "HF_TOKEN to a token of that account", 2)
    if isinstance(exc, RepositoryNotFoundError):
        return PullError(f"repository {repo_id} does not exist on {where} (or is private: set "
                         "HF_TOKEN); check the name with `vrampilot models`", 2)
    if isinstance(exc, RevisionNotFoundError):
        return PullError(f"{repo_id} has no such revision on {where}", 2)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return PullError(f"the disk filled up while downloading {repo_id}: free some space and run "
                         "the pull again (finished files are kept)")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return PullError(f"{where} answered HTTP {status} for {repo_id}: try again later")
    if isinstance(exc, (httpx2.TransportError, LocalEntryNotFoundError, ConnectionError)):
        return PullError(f"cannot reach {where} ({type(exc).__name__}): check the network "
                         "connection and run the pull again (finished files are kept)")
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "Consistency check failed" in text:
        return PullError(f"a file of {repo_id} arrived incomplete ({text.split(': ', 1)[-1]}): "
                         "run the pull again to fetch it again")
    return PullError(f"downloading {repo_id} failed: {text}")


def _wanted(names: list[str]) -> set[str]:
    from huggingface_hub.utils import filter_repo_objects

    return set(filter_repo_objects(names, allow_patterns=list(ALLOW_PATTERNS),
                                   ignore_patterns=list(IGNORE_PATTERNS)))


def plan_pull(repo_id: str, cache_dir: Path | None = None) -> PullPlan:
    """Ask the Hub which files to fetch and fetch config.json alone. Raises PullError."""
    from huggingface_hub import HfApi, hf_hub_download

    cache = cache_dir if cache_dir is not None else hf_cache_dir()
    where = endpoint()
    if offline():
        raise PullError(f"offline mode is on (HF_HUB_OFFLINE) and {repo_id} is not complete on "
                        "disk: unset HF_HUB_OFFLINE to download it", 2)
    try:
        info = HfApi(endpoint=where, token=token()).model_info(repo_id, files_metadata=True)
        commit = str(info.sha)
        names = [s.rfilename for s in info.siblings or []]
        wanted = _wanted(names)
        files = tuple(RepoFile(s.rfilename, int(s.size or 0), s.lfs.sha256 if s.lfs else None)
                      for s in info.siblings or [] if s.rfilename in wanted)
        if "config.json" not in wanted:
            raise PullError(f"{repo_id} has no config.json: it is not a model vLLM can load", 2)
        config = hf_hub_download(repo_id, "config.json", revision=commit, cache_dir=cache,
                                 endpoint=where, token=token(), tqdm_class=_silent_bar())
    except Exception as exc:  # every failure becomes one sentence
        raise _explain(exc, repo_id, where) from exc
    snapshot = repo_folder(repo_id, cache) / "snapshots" / commit
    # Small files first: a cancel during the weights then keeps config and tokenizer.
    missing = tuple(sorted((f for f in files if not (snapshot / f.name).is_file()),
                           key=lambda f: (f.size, f.name)))
    return PullPlan(repo_id, commit, files, missing, Path(config).parent, cache, where)


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the file system that holds path (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return shutil.disk_usage("/").free


def check_disk(plan: PullPlan, free_bytes: Callable[[Path], int] = free_disk_bytes) -> None:
    """PullError when the missing files (plus a margin) do not fit the cache's disk."""
    free = free_bytes(plan.cache_dir)
    need = plan.missing_bytes + DISK_MARGIN_BYTES
    if plan.missing and free < need:
        from core.models.estimator import fmt_bytes

        raise PullError(f"not enough disk space for {plan.repo_id}: it needs "
                        f"{fmt_bytes(plan.missing_bytes)} (+{fmt_bytes(DISK_MARGIN_BYTES)} kept "
                        f"free) but {plan.cache_dir} has {fmt_bytes(free)} free; free some space "
                        "or set HF_HUB_CACHE to a larger disk")


class _Meter:
    """Bytes done, rate over a sliding window, ETA; calls back at most every `interval` s."""

    def __init__(self, plan: PullPlan, callback: ProgressCallback | None,
                 cancel: threading.Event | None, interval: float = 0.25,
                 window_s: float = 5.0) -> None:
        self.total = plan.missing_bytes
        self.files_total = len(plan.missing)
        self.callback = callback
        self.cancel = cancel
        self.interval = interval
        self.window_s = window_s
        self.done_files_bytes = 0
        self.current = 0
        self.files_done = 0
        self.file = ""
        self.resumed_bytes = 0  # already on disk from an earlier run: done, but not transferred
        self._samples: deque[tuple[float, int]] = deque()
        self._last_emit = 0.0

    @property
    def done(self) -> int:
        return self.done_files_bytes + self.current

    def start_file(self, name: str) -> None:
        self.file, self.current = name, 0

    def resume_from(self, size: int) -> None:
        self.current += size
        self.resumed_bytes += size
        if size:
            self.emit(force=True)

    def add(self, n: float) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise PullCancelled()
        self.current = max(0, self.current + int(n))
        self.emit()

    def end_file(self, size: int) -> None:
        self.done_files_bytes += size
        self.current = 0
        self.files_done += 1
        self.emit(force=True)

    def snapshot(self) -> Progress:
        now = time.monotonic()
        transferred = self.done - self.resumed_bytes
        self._samples.append((now, transferred))
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        t0, b0 = self._samples[0]
        rate = (transferred - b0) / (now - t0) if now > t0 else 0.0
        remaining = max(0, self.total - self.done)
        eta = remaining / rate if rate > 0 else (0.0 if remaining == 0 else None)
        return Progress(self.done, self.total, rate, eta, self.file, self.files_done,
                        self.files_total)

    def emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.callback is None or (not force and now - self._last_emit < self.interval):
            return
        self._last_emit = now
        self.callback(self.snapshot())


def _bar_class(meter: _Meter) -> type:
    """A stand-in for tqdm that huggingface_hub's http_get drives: only `update` matters."""

    class Bar:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def update(self, n: float | None = 1) -> None:
            meter.add(n or 0)

        def close(self) -> None:
            pass

        def refresh(self) -> None:
            pass

    return Bar


def _silent_bar() -> type:
    """tqdm that shows nothing: snapshot_download's own bars, once every file is fetched."""
    from tqdm import tqdm

    class Silent(tqdm):
        monitor_interval = 0  # no tqdm monitor thread
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * 1024**2):
            digest.update(chunk)
    return digest.hexdigest()


def verify(plan: PullPlan, snapshot: Path, hashed: frozenset[str] | set[str] = frozenset()
           ) -> None:
    """Each weight file matches its safetensors header and the Hub's SHA-256. A damaged file is
    removed from the cache (blob and link) so the next pull fetches it again."""
    for f in plan.files:
        path = snapshot / f.name
        problem = safetensors_problem(path) if f.name.endswith(".safetensors") else None
        if problem is None and path.stat().st_size != f.size:
            problem = f"{f.name} has {path.stat().st_size} bytes, the Hub lists {f.size}"
        if problem is None and f.sha256 and f.name not in hashed and _sha256(path) != f.sha256:
            problem = f"{f.name} does not match the Hub's SHA-256"
        if problem is not None:
            blob = path.resolve()
            path.unlink(missing_ok=True)
            if blob != path:
                blob.unlink(missing_ok=True)
            raise PullError(f"{problem}; the damaged file was removed: run the pull again to "
                            "fetch it again")


def partial_path(plan: PullPlan, etag: str) -> Path:
    """Where an unfinished file waits between runs (huggingface_hub 2.x deletes its own)."""
    return plan.cache_dir / ".vrampilot-partial" / repo_folder(plan.repo_id, plan.cache_dir).name \
        / etag


def _fetch_blob(plan: PullPlan, f: RepoFile, meter: _Meter, bar: type,
                auth: str | None) -> bool:
    """Fetch one file into the cache's blobs/<etag>, resuming what an earlier run (cancelled or
    crashed) left, with huggingface_hub's own metadata call and HTTP transfer (Range requests).
    Files on Xet storage are left to hf_hub_download, which fetches them its way. True when the
    file was fetched here and its SHA-256 checked."""
    from importlib.util import find_spec
    from urllib.parse import urlparse

    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(plan.repo_id, f.name, revision=plan.commit, endpoint=plan.endpoint)
    meta = get_hf_file_metadata(url, token=auth, endpoint=plan.endpoint)
    xet = not constants.HF_HUB_DISABLE_XET and find_spec("hf_xet") is not None  # as the client
    if (meta.xet_file_data is not None and xet) or not meta.etag:
        return False  # hf_xet fetches it (HF_HUB_DISABLE_XET=1: plain HTTP, resumable, here)
    blob = repo_folder(plan.repo_id, plan.cache_dir) / "blobs" / meta.etag
    if blob.exists():
        return False
    partial = partial_path(plan, meta.etag)
    partial.parent.mkdir(parents=True, exist_ok=True)
    headers = build_hf_headers(token=auth)
    if urlparse(meta.location).netloc != urlparse(url).netloc:
        headers.pop("authorization", None)  # a CDN's signed URL must not get the Hub token
    with partial.open("ab") as out:
        done = out.tell()
        if meta.size is not None and done > meta.size:
            out.truncate(0)
            done = 0
        meter.resume_from(done)
        http_get(meta.location, out, resume_size=done, headers=headers,
                 expected_size=meta.size, displayed_filename=f.name, tqdm_class=bar)
    # LFS files: the ETag is the SHA-256 of the content.
    checked = bool(f.sha256 and meta.etag == f.sha256)
    if checked and _sha256(partial) != f.sha256:
        partial.unlink()
        raise PullError(f"{f.name} does not match the Hub's SHA-256; the damaged file was "
                        "removed: run the pull again to fetch it again")
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, blob)
    return checked


def download(plan: PullPlan, on_progress: ProgressCallback | None = None,
             cancel: threading.Event | None = None) -> Path:
    """Fetch the plan's missing files; returns the complete snapshot. Raises PullError
    (PullCancelled when cancel is set)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    meter = _Meter(plan, on_progress, cancel)
    hashed: set[str] = set()
    bar = _bar_class(meter)
    auth = token()
    try:
        for f in plan.missing:
            meter.start_file(f.name)
            meter.emit(force=True)
            if _fetch_blob(plan, f, meter, bar, auth):
                hashed.add(f.name)
            # The blob is in (or, for Xet storage, huggingface_hub fetches it here): this links
            # it into the snapshot and records the ref, as the client lays out its cache.
            hf_hub_download(plan.repo_id, f.name, revision=plan.commit, cache_dir=plan.cache_dir,
                            endpoint=plan.endpoint, token=auth, tqdm_class=bar)
            meter.end_file(f.size)
        # Every file is in: this records the commit's file list (what `on_disk` checks a
        # snapshot against) and returns the snapshot folder without fetching anything.
        snapshot = Path(snapshot_download(
            plan.repo_id, revision=plan.commit, cache_dir=plan.cache_dir, endpoint=plan.endpoint,
            token=auth, allow_patterns=list(ALLOW_PATTERNS),
            ignore_patterns=list(IGNORE_PATTERNS), tqdm_class=_silent_bar()))
    except PullCancelled:
        raise
    except Exception as exc:  # every failure becomes one sentence
        raise _explain(exc, plan.repo_id, plan.endpoint) from exc
    verify(plan, snapshot, hashed)
    if cached_snapshot(plan.repo_id, plan.cache_dir) is None:
        raise PullError(f"{plan.repo_id} downloaded but is not a complete model (no tokenizer or "
                        "weights): vLLM cannot load it")
    return snapshot


def fit_verdict(plan: PullPlan, entry: ModelEntry | None, catalog: Catalog,
                state: HardwareState, buffer: int) -> Estimate:
    """The estimator's verdict for this device from the repository's own config.json (fetched
    alone by plan_pull). entry: the catalog entry being fetched, None for a bare repo id."""
    from core.models.estimator import EstimatorSettings, fit_footprint, footprint

    settings = EstimatorSettings.for_cpu_engine() if state.host_memory else EstimatorSettings()
    template = entry or next(e for e in catalog if e.engine == "vllm")
    if entry is None:
        template = template.model_copy(update={"id": plan.repo_id, "quantization": "none"})
    fp = footprint(template, plan.config_dir, settings)
    # The catalog's context, or 8192 for a bare repo, never beyond what config.json allows.
    wanted = min((template.default_context if entry else None) or 8192, fp.max_position)
    return fit_footprint(fp, state.total_bytes, state.free_bytes, buffer, wanted=wanted,
                         settings=settings)
