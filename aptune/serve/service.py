"""What `aptune serve` does for a request, without HTTP: check the query, decode the video into its
test views, run it through the batcher, turn logits into top classes.

Views are those of `aptune eval` / `aptune predict`: the clip the adapters were trained on (frames,
size, sampling, stride and normalisation recorded in the first task's adapter.json), `clips` temporal
clips x `crops` spatial crops per video; a task's scores are the softmax of each view's logits averaged
over views. Each failure is a `Problem`: an HTTP status and a one-line message.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from ..data.datasets import VideoDataset
from ..data.decode import BadVideoError
from ..errors import DataError
from ..multitask import MultiTaskModel
from ..prediction import clip_settings, warn_sampling
from .batcher import Answer, Batcher


class Problem(Exception):
    """A request that gets a 4xx/5xx answer: `status` and a one-line `message`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, " ".join(str(message).split())


@dataclass
class Settings:
    clips: int = 2                   # temporal clips per video (as aptune predict)
    crops: int = 3                   # spatial crops per clip
    max_bytes: int = 100 * 2 ** 20   # a larger body is refused (413)
    window_ms: float = 10.0          # how long the first waiting request waits for others to join its forward
    max_batch: int = 32              # clips (views x tasks) per forward
    decode_threads: int = 2          # videos decoded at once
    topk: int = 5                    # top classes per task unless ?topk= says otherwise
    max_in_flight: int = 64          # /predict requests at once (reading, decoding, waiting, running); one more
                                     # gets 503 with Retry-After, so a burst cannot hold max_bytes each without end


def recorded_clip(mt: MultiTaskModel) -> dict:
    """The clip every task is served with: the first task's record (one decode serves all), with aptune
    predict's defaults (prediction.clip_settings) and the backbone's size and normalisation where the record
    has none; a warning for tasks trained with other sampling."""
    clip, _ = clip_settings(mt.task(mt.tasks[0]).clip, {})
    c = mt.backbone.config
    clip["num_frames"], clip["img_size"] = clip["num_frames"] or c.num_frames, clip["img_size"] or c.img_size
    clip["mean"], clip["std"] = list(clip["mean"] or c.mean), list(clip["std"] or c.std)
    warn_sampling(mt)
    return clip


class Service:
    """The model, its batcher and the decode pool; `handle` answers one request."""

    def __init__(self, mt: MultiTaskModel, settings: Settings | None = None):
        self.mt, self.settings = mt.eval(), settings or Settings()
        s = self.settings
        counts = (s.clips, s.crops, s.max_bytes, s.max_batch, s.decode_threads, s.topk, s.max_in_flight)
        if min(counts) < 1 or s.window_ms < 0:
            raise ValueError(f"settings out of range: {s}")
        self.clip = recorded_clip(mt)
        self.batcher = Batcher(mt, s.window_ms / 1000, s.max_batch, next(mt.backbone.parameters()).device)
        self.decoder = ThreadPoolExecutor(s.decode_threads, thread_name_prefix="aptune-decode")
        self._tmp = tempfile.TemporaryDirectory(prefix="aptune-serve-")
        self.in_flight = 0
        self.answered: dict[int, int] = {}           # status -> count

    def close(self) -> None:
        self.batcher.close()
        self.decoder.shutdown(wait=True)
        self._tmp.cleanup()

    # ---- one request, in steps (the app awaits the slow ones in threads) ---------------------
    def parse_query(self, params: dict[str, str]) -> tuple[list[str], int]:
        """(tasks, topk) from ?tasks=a,b&topk=5; all tasks and the default topk when absent."""
        unknown = sorted(set(params) - {"tasks", "topk"})
        if unknown:
            raise Problem(400, f"unknown query parameter {unknown[0]!r}; known: tasks, topk")
        tasks = list(dict.fromkeys(t.strip() for t in params.get("tasks", "").split(",") if t.strip()))
        for t in tasks:
            if t not in self.mt.tasks:
                raise Problem(400, f"unknown task {t!r}; loaded tasks: {', '.join(self.mt.tasks)}")
        raw = params.get("topk", str(self.settings.topk))
        if not raw.isdigit() or int(raw) < 1:
            raise Problem(400, f"topk: must be a positive integer, got {raw!r}")
        return tasks or self.mt.tasks, int(raw)

    def decode(self, data: bytes) -> torch.Tensor:
        """The request's test views (clips x crops, 3, T, S, S); Problem 415 when it is not a video."""
        path = os.path.join(self._tmp.name, uuid.uuid4().hex)
        with open(path, "wb") as f:
            f.write(data)
        c = self.clip
        try:
            ds = VideoDataset([(path, 0)], mode="test", num_frames=c["num_frames"], img_size=c["img_size"],
                              sampling=c["sampling"], sampling_rate=c["sampling_rate"], num_clips=self.settings.clips,
                              num_crops=self.settings.crops, mean=c["mean"], std=c["std"])
            return ds[0][0]
        except BadVideoError as e:                 # its reason names the temporary file: not the user's
            raise Problem(415, f"not a readable video ({len(data)} bytes): {e.reason.replace(path, 'the body')}") \
                from None
        except DataError as e:
            raise Problem(415, f"not a usable video ({len(data)} bytes): {str(e).replace(path, 'the body')}") from None
        finally:
            os.unlink(path)

    def answer(self, result: Answer, tasks: list[str], topk: int, views: int, timing: dict) -> dict:
        """The JSON body of a prediction."""
        out = {}
        for t in tasks:
            task = self.mt.task(t)
            names = task.class_names or [str(j) for j in range(task.num_classes)]
            probs = result.logits[t].float().softmax(-1).mean(0)                  # (classes,), views averaged
            val, idx = probs.topk(min(topk, probs.numel()))
            out[t] = {"method": task.method,
                      "top": [{"class": names[j], "score": round(float(v), 6)} for v, j in zip(val, idx.tolist())]}
        return {"tasks": out, "views": self.views_info() | {"count": views},
                "batch": {"requests": result.batch_requests, "clips": result.batch_clips},
                "timing_ms": {k: round(v * 1000, 2) for k, v in timing.items()}}

    def views_info(self) -> dict:
        return {"clips": self.settings.clips, "crops": self.settings.crops, **self.clip}

    def tasks_info(self) -> dict:
        tasks = [{"name": t, "method": self.mt.task(t).method, "num_classes": self.mt.task(t).num_classes,
                  "class_names": self.mt.task(t).class_names} for t in self.mt.tasks]
        return {"tasks": tasks, "views": self.views_info()}

    def health(self) -> dict:
        return {"status": "ok", "tasks": self.mt.tasks, "in_flight": self.in_flight,
                "waiting": self.batcher.waiting, **self.batcher.stats,
                "answered": {str(k): v for k, v in sorted(self.answered.items())}}
