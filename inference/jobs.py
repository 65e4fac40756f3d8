"""Inference jobs: submitted over HTTP, run beside the requests by one worker per device.

Job state lives in files (``<root>/<id>.json``, replaced atomically), so every server process
sharing the folder answers progress, cancel and results for every job. A worker claims a job with
an exclusive-create ``<id>.claim`` file, so two workers never run the same job; a cancel request
is a ``<id>.cancel`` file the running engine polls between batches.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from inference.engine import Engine, EngineOptions, Progress, resolve_device
from inference.errors import (
    InferenceCancelledError,
    InferenceError,
    InvalidRequestError,
    JobNotFoundError,
    ModelNotFoundError,
)
from inference.spec import Model, ModelSpec, load_named_model

__all__ = ["Job", "JobService", "JobState", "JobWorker"]

logger = logging.getLogger(__name__)

SlideResolver = Callable[[str], Path]
ModelLoader = Callable[[str, torch.device], tuple[ModelSpec, torch.nn.Module | Model]]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True, slots=True)
class Job:
    """One job's record; ``slide_id`` is opaque (no paths in records or URLs)."""

    id: str
    slide_id: str
    model: str
    state: JobState = JobState.QUEUED
    units_done: int = 0
    units_total: int = 0
    patches_run: int = 0
    patches_skipped: int = 0
    patches_per_s: float = 0.0
    error_code: str | None = None
    error: str | None = None
    labels: str | None = None  # "labels/<model>" inside the slide's store
    outlines: str | None = None  # "labels/<model>.geojson"
    created: float = 0.0
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        return data


_ID_CHARS = frozenset("0123456789abcdef")


class JobService:
    """The jobs folder: submit, read, cancel; shared by server processes and workers."""

    def __init__(
        self,
        root: Path,
        resolve_slide: SlideResolver,
        model_names: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.resolve_slide = resolve_slide
        self.model_names = model_names

    def _path(self, job_id: str, suffix: str = ".json") -> Path:
        if len(job_id) != 32 or not set(job_id) <= _ID_CHARS:
            raise JobNotFoundError(f"no job {job_id[:40]!r}")
        return self.root / f"{job_id}{suffix}"

    def _write(self, job: Job) -> None:
        path = self._path(job.id)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(job.to_dict()))
        tmp.replace(path)

    def submit(self, slide_id: str, model: str) -> Job:
        """Queue a job; the slide and model are checked now, so a typo fails at once."""
        if not slide_id or not model:
            raise InvalidRequestError("slide_id and model are required")
        self.resolve_slide(slide_id)  # raises the resolver's not-found error
        if self.model_names is not None and model not in set(self.model_names()):
            raise ModelNotFoundError(f"no model {model!r}")
        now = time.time()
        job = Job(id=uuid.uuid4().hex, slide_id=slide_id, model=model, created=now, updated=now)
        self._write(job)
        logger.info("job %s queued (model %s)", job.id, model)
        return job

    def get(self, job_id: str) -> Job:
        try:
            data = json.loads(self._path(job_id).read_text())
        except FileNotFoundError as exc:
            raise JobNotFoundError(f"no job {job_id!r}") from exc
        data["state"] = JobState(data["state"])
        return Job(**data)

    def list_jobs(self) -> list[Job]:
        jobs = []
        for path in self.root.glob("*.json"):
            try:
                jobs.append(self.get(path.stem))
            except (JobNotFoundError, ValueError):
                continue
        return sorted(jobs, key=lambda job: job.created)

    def update(self, job_id: str, **changes: Any) -> Job:
        job = replace(self.get(job_id), updated=time.time(), **changes)
        self._write(job)
        return job

    def cancel(self, job_id: str) -> Job:
        """Queued jobs are cancelled at once; running ones at their next batch."""
        job = self.get(job_id)
        if job.state in FINAL_STATES:
            return job
        self._path(job_id, ".cancel").touch()
        if job.state == JobState.QUEUED and self._claim(job_id):
            return self.update(job_id, state=JobState.CANCELLED)
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return self._path(job_id, ".cancel").exists()

    def _claim(self, job_id: str) -> bool:
        try:
            fd = os.open(self._path(job_id, ".claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def requeue_stale(self, max_age_s: float) -> list[str]:
        """Re-queue running jobs whose record has not moved for ``max_age_s`` (their server
        died); the engine resumes them from the units already written."""
        requeued: list[str] = []
        now = time.time()
        for job in self.list_jobs():
            if job.state == JobState.RUNNING and now - job.updated > max_age_s:
                self._path(job.id, ".claim").unlink(missing_ok=True)
                self.update(job.id, state=JobState.QUEUED)
                requeued.append(job.id)
                logger.info("job %s re-queued: no progress for %.0f s", job.id, now - job.updated)
        return requeued

    def claim_next(self) -> Job | None:
        """The oldest queued job, now owned by the caller, or None."""
        for job in self.list_jobs():
            if job.state == JobState.QUEUED and self._claim(job.id):
                if self.cancel_requested(job.id):
                    self.update(job.id, state=JobState.CANCELLED)
                    continue
                return self.update(job.id, state=JobState.RUNNING)
        return None


class JobWorker:
    """Runs queued jobs one at a time on one device (start one per GPU); models load once."""

    def __init__(
        self,
        service: JobService,
        device: str = "cpu",
        options: EngineOptions | None = None,
        load_model: ModelLoader = load_named_model,
        poll_s: float = 0.5,
    ) -> None:
        self.service = service
        self.device = resolve_device(device)
        self.options = options or EngineOptions()
        self.load_model = load_model
        self.poll_s = poll_s
        self._engines: dict[str, Engine] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="infer-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.run_once():
                self._stop.wait(self.poll_s)

    def _engine(self, name: str) -> Engine:
        if name not in self._engines:
            spec, model = self.load_model(name, self.device)
            self._engines[name] = Engine(model, spec, self.device, self.options)
        return self._engines[name]

    def run_once(self) -> bool:
        """Run the next queued job to its end; False when there was none."""
        job = self.service.claim_next()
        if job is None:
            return False
        service = self.service
        cancel = threading.Event()
        last = [0.0]

        def progress(p: Progress) -> None:
            if service.cancel_requested(job.id):
                cancel.set()
            now = time.monotonic()
            if now - last[0] >= 0.5 or p.units_done == p.units_total:
                last[0] = now
                service.update(
                    job.id, units_done=p.units_done, units_total=p.units_total,
                    patches_run=p.patches_run, patches_skipped=p.patches_skipped,
                    patches_per_s=round(p.patches_per_s, 2),
                )  # fmt: skip

        try:
            engine = self._engine(job.model)
            store = service.resolve_slide(job.slide_id)
            result = engine.run(store, progress=progress, cancel=cancel)
        except InferenceCancelledError:
            service.update(job.id, state=JobState.CANCELLED)
            logger.info("job %s cancelled", job.id)
        except InferenceError as exc:
            service.update(job.id, state=JobState.FAILED, error_code=exc.code, error=str(exc))
            logger.warning("job %s failed: %s", job.id, exc.code)
        except Exception as exc:  # a worker must outlive one bad job
            logger.exception("job %s crashed", job.id)
            service.update(
                job.id, state=JobState.FAILED, error_code="internal", error=type(exc).__name__
            )
        else:
            name = result.labels_dir.name
            service.update(
                job.id, state=JobState.DONE, labels=f"labels/{name}",
                outlines=f"labels/{name}.geojson" if result.geojson else None,
                units_done=result.units_total, units_total=result.units_total,
            )  # fmt: skip
            logger.info("job %s done in %.1f s", job.id, result.seconds)
        return True
