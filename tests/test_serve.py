"""aptune serve over real HTTP on 127.0.0.1: answers equal each task's own model, concurrent requests
share one mixed forward, bad requests get a one-line 4xx and leave the server up, a crash answers 500,
SIGTERM lets a request in flight finish and exits 0."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import save_file

import aptune
from aptune.cli import main
from aptune.data.datasets import VideoDataset
from aptune.models.zoo import get_config
from aptune.multitask import load_adapters
from aptune.serve import Server, Settings
from aptune.serve.batcher import Batcher

from helpers import randomise
from videos import make_video

# (task, method, options, classes) on a 2-block tiny VideoMAE
TASKS = [("apt", "apt", {"num_prompts": 4}, 3), ("lora", "lora", {"rank": 2}, 5),
         ("vpt", "vpt", {"num_prompts": 2}, 4), ("linear", "linear", {}, 6)]
VIEWS = {"clips": 1, "crops": 2}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    config = get_config("tiny", depth=2)
    torch.manual_seed(0)
    ckpt = root / "backbone.safetensors"
    save_file(randomise(aptune.create_model(config)).state_dict(), str(ckpt))
    dirs = {}
    for i, (name, method, options, classes) in enumerate(TASKS):
        torch.manual_seed(i)
        net = aptune.create_model(config, num_classes=classes, checkpoint=ckpt, method=method, **options)
        with torch.no_grad():
            for n, p in net.named_parameters():
                if p.requires_grad:
                    p.copy_(torch.randn_like(p) * 0.5 + (1.0 if n.endswith("scale") else 0.0))
        dirs[name] = aptune.save_adapter(net, root / name, class_names=[f"{name}-{j}" for j in range(classes)])
    return {"ckpt": ckpt, "dirs": dirs, "video": make_video(root / "clip.mp4", 40),
            "other": make_video(root / "other.avi", 24, width=160, height=96), "root": root}


@pytest.fixture(scope="module")
def server(files):
    mt = load_adapters(files["dirs"], checkpoint=files["ckpt"])
    srv = Server(mt, Settings(**VIEWS, max_bytes=200_000, window_ms=5), port=0, log_level="warning").start()
    yield srv
    srv.stop()


def call(url, data=None, headers=None, method=None):
    """(status, JSON body) of one HTTP request."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post_video(url, path, query="", content_type="video/mp4"):
    return call(f"{url}/predict{query}", path.read_bytes(), {"Content-Type": content_type})


def wait_for_health(url, ready, timeout=60.0):
    """Poll GET /health until `ready(its JSON)` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready(call(f"{url}/health")[1]):
        assert time.monotonic() < deadline, f"/health never got there in {timeout:g} s"
        time.sleep(0.02)


def own_scores(files, task, video):
    """The task's own model (load_adapter) on the test views of `video`: {class: mean softmax over views}."""
    net = aptune.load_adapter(files["dirs"][task], checkpoint=files["ckpt"]).eval()
    clip = net.adapter_meta["clip"]
    views = VideoDataset([(str(video), 0)], mode="test", num_frames=clip["num_frames"], img_size=clip["img_size"],
                         sampling_rate=4, num_clips=VIEWS["clips"], num_crops=VIEWS["crops"])[0][0]
    with torch.no_grad():
        probs = net(views).softmax(-1).mean(0)
    return dict(zip(net.class_names, probs.tolist()))


def check_answer(files, body, video, tasks, topk=None):
    assert list(body["tasks"]) == tasks
    for t in tasks:
        want = own_scores(files, t, video)
        top = body["tasks"][t]["top"]
        assert len(top) == min(topk or 5, len(want))
        assert [e["class"] for e in top] == sorted(want, key=want.get, reverse=True)[:len(top)]
        for e in top:
            assert e["score"] == pytest.approx(want[e["class"]], abs=2e-6), (t, e)


# ---- answers -----------------------------------------------------------------------------------
def test_tasks_and_health(server):
    status, body = call(f"{server.url}/tasks")
    assert status == 200
    assert [(t["name"], t["method"], t["num_classes"]) for t in body["tasks"]] == [(n, m, c) for n, m, _, c in TASKS]
    assert body["tasks"][1]["class_names"] == [f"lora-{j}" for j in range(5)]
    assert body["views"]["clips"] == 1 and body["views"]["crops"] == 2 and body["views"]["num_frames"] == 4
    status, body = call(f"{server.url}/health")
    assert status == 200 and body["status"] == "ok" and body["tasks"] == [t[0] for t in TASKS]


def test_predict_gives_each_tasks_own_answer(server, files):
    status, body = post_video(server.url, files["video"])
    assert status == 200
    check_answer(files, body, files["video"], [t[0] for t in TASKS])
    assert body["views"]["count"] == 2 and body["views"]["img_size"] == 32
    status, body = post_video(server.url, files["other"], "?tasks=lora,apt&topk=2", "video/x-msvideo")
    assert status == 200
    check_answer(files, body, files["other"], ["lora", "apt"], topk=2)


def test_a_multipart_upload_gives_the_same_answer(server, files):
    boundary = "aptune-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--{boundary}\r\n"
            f"Content-Disposition: form-data; name=\"video\"; filename=\"clip.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n")
    data = head.encode() + files["video"].read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, body = call(f"{server.url}/predict?tasks=vpt", data,
                        {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200
    check_answer(files, body, files["video"], ["vpt"])


def test_concurrent_requests_share_one_mixed_forward(files):
    """Four requests asking for different tasks, sent at once: the batcher waits (a long window) until
    all 16 clips are there and runs them as one forward of every task; each answer is still its own."""
    mt = load_adapters(files["dirs"], checkpoint=files["ckpt"])
    asks = ["apt", "lora,vpt", "linear", "apt,lora,vpt,linear"]           # 2 views each: 2 + 4 + 2 + 8 clips
    srv = Server(mt, Settings(**VIEWS, window_ms=20_000, max_batch=16), port=0, log_level="warning").start()
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda q: post_video(srv.url, files["video"], f"?tasks={q}"), asks))
        stats, last = dict(srv.service.batcher.stats), srv.service.batcher.last_batch
    finally:
        srv.stop()
    assert stats["forwards"] == 1 and stats["requests"] == 4 and stats["clips"] == 16
    assert last == {"requests": 4, "clips": 16, "tasks": ["apt", "linear", "lora", "vpt"]}
    for ask, (status, body) in zip(asks, answers):
        assert status == 200 and body["batch"] == {"requests": 4, "clips": 16}
        check_answer(files, body, files["video"], ask.split(","))


# ---- bad requests --------------------------------------------------------------------------------
BAD = [  # (query, body, headers, method, status, message)
    ("", b"", {"Content-Type": "video/mp4"}, "POST", 400, "empty request body"),
    ("", b"hello", {"Content-Type": "text/plain"}, "POST", 415, "Content-Type text/plain is not a video"),
    ("", b"\x00\x01 not a video at all" * 10, {"Content-Type": "video/mp4"}, "POST", 415, "not a readable video"),
    ("?tasks=apt,ucf101", None, {}, "POST", 400, "unknown task 'ucf101'; loaded tasks: apt, lora, vpt, linear"),
    ("?topk=0", None, {}, "POST", 400, "topk: must be a positive integer, got '0'"),
    ("?task=apt", None, {}, "POST", 400, "unknown query parameter 'task'"),
    ("", b"x" * 200_001, {"Content-Type": "video/mp4"}, "POST", 413, "larger than the limit 200,000"),
    ("", b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b--\r\n",
     {"Content-Type": "multipart/form-data; boundary=b"}, "POST", 400, "multipart form without a file field"),
    ("", None, {}, "GET", 405, "Method Not Allowed: GET /predict"),
]


@pytest.mark.parametrize("query,body,headers,method,status,message", BAD)
def test_bad_requests_get_a_one_line_4xx_and_the_server_stays_up(server, files, query, body, headers, method,
                                                                  status, message):
    if body is None and method == "POST":
        body, headers = files["video"].read_bytes(), {"Content-Type": "video/mp4"}
    got, answer = call(f"{server.url}/predict{query}", body, headers, method)
    assert got == status and message in answer["error"] and "\n" not in answer["error"], answer
    assert "/tmp" not in answer["error"]                   # no server-side path leaks into the message
    assert call(f"{server.url}/health")[0] == 200
    assert post_video(server.url, files["video"], "?tasks=apt")[0] == 200


def test_a_crash_inside_the_model_answers_500_and_the_server_goes_on(server, files, monkeypatch):
    real, calls = server.service.batcher.model, []

    def breaks_once(video, tasks):
        calls.append(len(tasks))
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")
        return real(video, tasks)

    monkeypatch.setattr(server.service.batcher, "model", breaks_once)
    status, body = post_video(server.url, files["video"], "?tasks=lora")
    assert status == 500 and "\n" not in body["error"]
    assert body["error"].startswith("internal error (RuntimeError: CUDA error: an illegal memory access was")
    status, body = post_video(server.url, files["video"], "?tasks=lora")
    assert status == 200
    check_answer(files, body, files["video"], ["lora"])


def test_one_failing_request_does_not_fail_the_others_in_its_batch():
    """The batched forward raises because of one job: each job is retried alone; only that one fails."""
    def model(video, tasks):
        if "boom" in tasks:
            raise ValueError("bad task")
        return [torch.full((2,), float(v)) for v in video[:, 0, 0, 0, 0].tolist()]

    b = Batcher(model, window_s=20.0, max_clips=3)
    good = b.submit(torch.full((2, 3, 1, 1, 1), 7.0), ["a"])
    bad = b.submit(torch.zeros(1, 3, 1, 1, 1), ["boom"])
    assert good.result(10).logits["a"].tolist() == [[7.0, 7.0], [7.0, 7.0]]
    with pytest.raises(ValueError, match="bad task"):
        bad.result(10)
    b.close(10)
    assert b.stats["failed"] == 1 and b.stats["requests"] == 1


def test_a_request_gone_while_it_waits_is_dropped_and_the_batcher_goes_on():
    seen = []

    def model(video, tasks):
        seen.append(list(tasks))
        return [torch.zeros(2) for _ in tasks]

    b = Batcher(model, window_s=0.5, max_clips=8)
    gone = b.submit(torch.zeros(1, 3, 1, 1, 1), ["gone"])
    assert gone.cancel()                                     # its request went away during the window
    kept = b.submit(torch.zeros(1, 3, 1, 1, 1), ["kept"])
    assert kept.result(10).logits["kept"].shape == (1, 2)
    b.close(10)
    assert seen == [["kept"]] and b.stats["requests"] == 1


def test_past_max_in_flight_a_request_gets_503_with_retry_after_and_the_server_goes_on(files):
    """One upload held half-sent keeps the only slot: the next request is told to retry (503, Retry-After),
    and once the slow client goes the server answers again."""
    mt = load_adapters({"apt": files["dirs"]["apt"]}, checkpoint=files["ckpt"])
    srv = Server(mt, Settings(**VIEWS, max_in_flight=1), port=0, log_level="warning").start()
    try:
        host, port = srv.url.split("//")[1].split(":")
        slow = socket.create_connection((host, int(port)), timeout=30)
        slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\n"
                     b"Content-Length: 100000\r\n\r\n" + b"\0" * 1000)
        wait_for_health(srv.url, lambda h: h["in_flight"] == 1)
        req = urllib.request.Request(f"{srv.url}/predict", files["video"].read_bytes(), {"Content-Type": "video/mp4"})
        with pytest.raises(urllib.error.HTTPError) as busy:
            urllib.request.urlopen(req, timeout=60)
        assert busy.value.code == 503 and busy.value.headers["Retry-After"] == "1"
        assert "--max-in-flight 1" in json.loads(busy.value.read())["error"]
        slow.close()
        wait_for_health(srv.url, lambda h: h["in_flight"] == 0)
        status, body = post_video(srv.url, files["video"])
        assert status == 200 and set(body["tasks"]) == {"apt"}
        assert call(f"{srv.url}/health")[1]["answered"]["503"] == 1
    finally:
        srv.stop()


# ---- the command -------------------------------------------------------------------------------------
def test_serve_command_refuses_a_bad_adapter_in_one_line(files, capsys):
    assert main(["serve", "--adapter", f"x={files['root'] / 'nope'}", "--checkpoint", str(files["ckpt"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aptune: error:") and "nope" in err and len(err.splitlines()) == 1


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(files):
    """A subprocess server; a request waits in its batch window when SIGTERM arrives: it is answered,
    then the server stops and the command exits 0."""
    cmd = [sys.executable, "-m", "aptune", "serve", "--adapter", f"apt={files['dirs']['apt']}", "--checkpoint",
           str(files["ckpt"]), "--port", "0", "--batch-window-ms", "2000", "--clips", "1", "--crops", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = None
        for line in proc.stdout:                                  # the start-up summary ends with the address
            if line.startswith("listening on "):
                url = line.split()[2]
                break
        assert url, proc.stderr.read()
        answer = {}
        client = threading.Thread(target=lambda: answer.update(r=post_video(url, files["video"])))
        client.start()
        wait_for_health(url, lambda h: h["waiting"] >= 1)        # decoded, waiting in the window
        proc.send_signal(signal.SIGTERM)
        client.join(60)
        assert proc.wait(60) == 0
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    status, body = answer["r"]
    assert status == 200 and [e["class"] for e in body["tasks"]["apt"]["top"]][0].startswith("apt-")
    assert "stopped (SIGTERM) after answering 1 prediction request(s)" in out
    assert "Shutting down" in err
