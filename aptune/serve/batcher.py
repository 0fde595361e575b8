"""Requests that arrive together, run as one mixed forward of a MultiTaskModel.

A request is a job: its test views (V, 3, T, S, S) and the tasks it asks for. One model thread takes
the jobs that wait: after the first one arrives it waits at most `window` seconds for more (less once
`max_clips` clips wait), then runs every taken job's views once per asked task as one batch,

    video = [job 1 views x task a | job 1 views x task b | job 2 views x task a | ...]   (sum V x tasks, ...)
    tasks = [a] * V1 + [b] * V1 + [a] * V2 + ...

in forwards of at most `max_clips` clips, and answers each job with its (V, classes) logits per task.
While a forward runs, new jobs queue and form the next batch, so under load the batch grows by
itself. A forward that raises is retried one job at a time, so one request that breaks the model
fails alone; its future gets the exception. A job whose future was cancelled while it waited (its
request gone) is dropped. Stats (requests, forwards, clips, largest batch, the last
batch) are kept for /health, tests and benchmarks. No web framework here: plain threads and futures.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch


class ShuttingDown(RuntimeError):
    """A job submitted after close()."""


@dataclass
class Job:
    views: torch.Tensor                          # (V, 3, T, S, S)
    tasks: list[str]
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)

    @property
    def clips(self) -> int:
        return self.views.shape[0] * len(self.tasks)


@dataclass
class Answer:
    """A job's result: per task its (V, classes) logits, and the batch it ran in."""
    logits: dict[str, torch.Tensor]
    batch_requests: int
    batch_clips: int
    forward_s: float


class Batcher:
    """One model thread running queued jobs as mixed forwards (module docstring)."""

    def __init__(self, model, window_s: float = 0.01, max_clips: int = 32, device: str | torch.device = "cpu"):
        if max_clips < 1 or window_s < 0:
            raise ValueError(f"max_clips must be >= 1 and window_s >= 0, got {max_clips}, {window_s}")
        self.model, self.window, self.max_clips = model, float(window_s), int(max_clips)
        self.device = torch.device(device)                # where the model is: each batch is moved there
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.stats = {"requests": 0, "forwards": 0, "clips": 0, "largest_batch": 0, "failed": 0}
        self.last_batch: dict = {}
        self._thread = threading.Thread(target=self._loop, name="aptune-model", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    def submit(self, views: torch.Tensor, tasks: list[str]) -> Future:
        """Queue a request; its future gives an `Answer` (or the exception its forward raised)."""
        job = Job(views, list(tasks))
        with self._cond:
            if self._closed:
                raise ShuttingDown("the server is shutting down")
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Run what waits, then stop the model thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # ---- the model thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]   # drop cancelled ones
            if jobs:
                self._run(jobs)

    def _take(self) -> list[Job] | None:
        """The next batch: the jobs that arrived within the window after the first, up to max_clips
        clips (one job at least); None once closed and drained."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            deadline = self._jobs[0].arrived + self.window
            while not self._closed and sum(j.clips for j in self._jobs) < self.max_clips:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken = [self._jobs.popleft()]
            clips = taken[0].clips
            while self._jobs and clips + self._jobs[0].clips <= self.max_clips:
                clips += self._jobs[0].clips
                taken.append(self._jobs.popleft())
            return taken

    def _run(self, jobs: list[Job]) -> None:
        try:
            answers = self._forward(jobs)
        except Exception as e:               # noqa: BLE001  (a request's failure is its answer)
            if len(jobs) > 1:                # find the job that breaks the model; the others get answers
                for job in jobs:
                    self._run([job])
                return
            self.stats["failed"] += 1
            jobs[0].future.set_exception(e)
            return
        for job, answer in zip(jobs, answers):
            job.future.set_result(answer)

    def _forward(self, jobs: list[Job]) -> list[Answer]:
        video = torch.cat([job.views for job in jobs for _ in job.tasks]).to(self.device)   # (clips, 3, T, S, S)
        names = [t for job in jobs for t in job.tasks for _ in range(job.views.shape[0])]
        t0 = time.perf_counter()
        logits: list[torch.Tensor] = []
        forwards = 0
        with torch.no_grad():
            for i in range(0, len(names), self.max_clips):
                logits += self.model(video[i:i + self.max_clips], names[i:i + self.max_clips])
                forwards += 1
        took = time.perf_counter() - t0
        s = self.stats
        s["requests"] += len(jobs)
        s["forwards"] += forwards
        s["clips"] += len(names)
        s["largest_batch"] = max(s["largest_batch"], len(jobs))
        self.last_batch = {"requests": len(jobs), "clips": len(names), "tasks": sorted(set(names))}
        answers, k = [], 0
        for job in jobs:
            V, per_task = job.views.shape[0], {}
            for t in job.tasks:
                per_task[t] = torch.stack(logits[k:k + V]).float().cpu()            # (V, classes)
                k += V
            answers.append(Answer(per_task, len(jobs), len(names), took))
        return answers
