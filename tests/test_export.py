"""Export (aptune/export): every method as ONNX (run by onnxruntime) and as a torch.export program (loaded
back), and what transformers can represent as a VideoMAEForVideoClassification folder (run by transformers
itself); each against the logits of aptune's own model."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

import aptune
from aptune.cli import main
from aptune.errors import ConfigError, ExportError
from aptune.export import export_adapter
from aptune.models.zoo import get_config

from helpers import randomise
from videos import make_video

# small options, and random values in every tensor that trains (zero-init branches such as LoRA's B count too)
OPTIONS = {"apt": {"num_prompts": 4}, "vpt": {"num_prompts": 3}, "adaptformer": {"bottleneck": 8},
           "lora": {"rank": 4, "targets": ["qkv", "proj", "fc1", "fc2"]},
           "approx_prompt": {"num_prompts": 6, "rank": 2}, "st_adapter": {"width": 8}, "aim": {"mlp_ratio": 0.25}}
CLASSES = ["walk", "run", "jump"]
DEPTH = 1          # one block: tracing and converting cost grows with the graph (about 2 s per ONNX export)


def clips(model, n, seed):
    c = model.config
    return torch.randn(n, 3, c.num_frames, c.img_size, c.img_size, generator=torch.Generator().manual_seed(seed))


class Adapters:
    """Adapters on 1-block tiny backbones (VideoMAE `tiny`, and `tiny-clip` for image-backbone methods),
    made once per module."""

    def __init__(self, root):
        self.root, self.made, self.backbones = root, {}, {}

    def backbone(self, name):
        if name not in self.backbones:
            torch.manual_seed(0)
            path = self.root / f"{name}.safetensors"
            save_file(randomise(aptune.create_model(get_config(name, depth=DEPTH))).state_dict(), str(path))
            self.backbones[name] = path
        return self.backbones[name]

    def __call__(self, method, model=None):
        """(adapter folder, backbone file) of `method` on `model` (default: tiny, or tiny-clip where the method
        needs an image backbone)."""
        if model is None:
            try:
                aptune.create_model(get_config("tiny", depth=DEPTH), method=method, **OPTIONS.get(method, {}))
                model = "tiny"
            except ConfigError:
                model = "tiny-clip"
        key = (method, model)
        if key not in self.made:
            ckpt = self.backbone(model)
            torch.manual_seed(1)
            net = aptune.create_model(get_config(model, depth=DEPTH), num_classes=3, checkpoint=ckpt, method=method,
                                      **OPTIONS.get(method, {}))
            with torch.no_grad():
                for name, p in net.named_parameters():
                    if p.requires_grad:
                        p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.ndim == 1 or name.endswith("scale") else 0.0))
            d = self.root / f"{method}-{model}"
            aptune.save_adapter(net, d, class_names=CLASSES)
            self.made[key] = (d, ckpt)
        return self.made[key]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return Adapters(tmp_path_factory.mktemp("adapters"))


def aptune_model(adapter):
    directory, ckpt = adapter
    return aptune.load_adapter(directory, checkpoint=ckpt).eval()


# ---- ONNX --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", aptune.list_methods())
def test_onnx_gives_aptunes_logits_for_every_method(adapters, tmp_path, method):
    adapter = adapters(method)
    opset = 18 if method == "linear" else None                # torch's default (20 today) for the others
    out = export_adapter(adapter[0], "onnx", tmp_path / "model.onnx", checkpoint=adapter[1], opset=opset)
    assert out.paths == [tmp_path / "model.onnx"]
    if opset:
        assert {o.domain: o.version for o in onnx.load(str(tmp_path / "model.onnx")).opset_import}[""] == 18
    net = aptune_model(adapter)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch" and session.get_outputs()[0].shape == ["batch", 3]
    for n in (1, 4):                                          # the batch is dynamic (traced with 2)
        x = clips(net, n, seed=n)
        got = session.run(["logits"], {"video": x.numpy()})[0]
        with torch.no_grad():
            want = net(x)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4, err_msg=f"{method} batch {n}")
    meta = json.loads(session.get_modelmeta().custom_metadata_map["aptune"])
    assert meta["class_names"] == CLASSES and meta["method"] == method
    assert meta["input"]["shape"] == ["batch", 3, 4, 32, 32]
    assert meta["clip"]["mean"] == list(net.config.mean)


# ---- torch.export program ----------------------------------------------------------------------
def test_torch_program_loads_back_and_gives_aptunes_logits(adapters, tmp_path, capsys):
    method = "apt"
    adapter = adapters(method)
    path = tmp_path / "model.pt2"
    assert main(["export", str(adapter[0]), "--format", "torch", "--out", str(path),
                 "--checkpoint", str(adapter[1])]) == 0
    printed = capsys.readouterr().out
    assert f"method {method}" in printed and f"wrote {path}" in printed and "checked: torch.export.load" in printed
    extra = {"aptune.json": ""}
    program = torch.export.load(path, extra_files=extra)
    net = aptune_model(adapter)
    for n in (1, 3):
        x = clips(net, n, seed=10 + n)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), net(x), atol=1e-5, rtol=1e-5)
    assert json.loads(extra["aptune.json"])["class_names"] == CLASSES


def test_torch_program_needs_the_pt2_suffix(adapters, tmp_path, capsys):
    adapter = adapters("linear")
    assert main(["export", str(adapter[0]), "--format", "torch", "--out", str(tmp_path / "model.pt"),
                 "--checkpoint", str(adapter[1])]) == 2
    assert "model.pt: a torch.export program is a .pt2 file" in capsys.readouterr().err
    assert main(["export", str(adapter[0]), "--format", "torch", "--out", str(tmp_path / "m.pt2"), "--opset", "18",
                 "--checkpoint", str(adapter[1])]) == 2
    assert "--opset applies to --format onnx" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_failed_check_writes_nothing_and_keeps_the_previous_file(adapters, tmp_path, monkeypatch):
    adapter = adapters("apt")
    path = tmp_path / "model.pt2"
    path.write_bytes(b"the previous export")
    monkeypatch.setattr("aptune.export.common.TOLERANCE", -1.0)        # every check fails
    with pytest.raises(ExportError, match="torch.export.load: logits differ.*nothing was written"):
        export_adapter(adapter[0], "torch", path, checkpoint=adapter[1])
    assert path.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]   # no temporary folder left


# ---- transformers ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["linear", "full", "lora"])
def test_hf_folder_loads_in_transformers_with_aptunes_logits(adapters, tmp_path, method):
    from transformers import VideoMAEForVideoClassification
    adapter = adapters(method)
    export_adapter(adapter[0], "hf", tmp_path / "hf", checkpoint=adapter[1])
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors",
                                                                   "preprocessor_config.json"]
    hf = VideoMAEForVideoClassification.from_pretrained(tmp_path / "hf").eval()
    net = aptune_model(adapter)
    x = clips(net, 2, seed=5)
    with torch.no_grad():
        got = hf(pixel_values=x.transpose(1, 2)).logits              # transformers: (B, T, C, H, W)
        torch.testing.assert_close(got, net(x), atol=1e-4, rtol=1e-4)
    assert hf.config.id2label == dict(enumerate(CLASSES)) and hf.config.label2id == {"walk": 0, "run": 1, "jump": 2}
    assert hf.config.layer_norm_eps == 1e-6 and hf.config.use_mean_pooling and hf.config.num_hidden_layers == DEPTH
    # aptune reads the folder back (models/videomae/formats.py's hf-videomae reader)
    again = aptune.create_model(str(tmp_path / "hf")).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), got, atol=1e-5, rtol=1e-5)


def test_hf_pipeline_decodes_a_video_and_gives_aptunes_scores(adapters, tmp_path):
    """pipeline("video-classification") decodes the file itself here (PyAV) with the folder's
    preprocessor_config.json; its scores are the softmax of aptune's logits on the frames it prepared."""
    from transformers import pipeline
    adapter = adapters("lora")
    export_adapter(adapter[0], "hf", tmp_path / "hf", checkpoint=adapter[1])
    video = make_video(tmp_path / "clip.mp4", num_frames=12)
    pipe = pipeline("video-classification", model=str(tmp_path / "hf"))
    preds = pipe(str(video), top_k=3)
    pixels = pipe.preprocess(str(video))["pixel_values"]              # (1, T, 3, 32, 32), as the pipeline ran it
    assert tuple(pixels.shape) == (1, 4, 3, 32, 32)
    with torch.no_grad():
        probs = aptune_model(adapter)(pixels.transpose(1, 2))[0].softmax(-1)
    assert [p["label"] for p in preds] == [CLASSES[i] for i in probs.argsort(descending=True).tolist()]
    np.testing.assert_allclose([p["score"] for p in preds], probs.sort(descending=True).values.numpy(), atol=1e-4)


@pytest.mark.parametrize("method,why", [("apt", "no key/value prompts"), ("vpt", "no prompt tokens"),
                                        ("adaptformer", "no branch beside the MLP"),
                                        ("approx_prompt", "no learned step on the attention output"),
                                        ("st_adapter", "no adapter on the residual stream"),
                                        ("aim", "image ViT run frame by frame")])
def test_hf_refuses_what_transformers_cannot_represent(adapters, tmp_path, capsys, method, why):
    adapter = adapters(method)
    assert main(["export", str(adapter[0]), "--format", "hf", "--out", str(tmp_path / "hf"),
                 "--checkpoint", str(adapter[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aptune: error: cannot export to transformers") and why in err and "--format onnx" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "hf").exists()


def test_hf_export_refuses_a_folder_holding_other_files(adapters, tmp_path):
    adapter = adapters("linear")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty.*notes.txt"):
        export_adapter(adapter[0], "hf", tmp_path, checkpoint=adapter[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_the_check_is_relative_to_the_logits_scale():
    """An untrained VideoMAE head gives logits near 1e-4: an export answering zeros must still fail."""
    from aptune.export.common import check_logits
    small = torch.randn(3, 5) * 1e-4
    with pytest.raises(ExportError, match="differ from aptune's"):
        check_logits(small, torch.zeros(3, 5), "exporter")
    assert "max |diff|" in check_logits(small, small * (1 + 1e-6), "exporter")
    with pytest.raises(ExportError, match=r"shape \(3, 4\)"):
        check_logits(small, torch.zeros(3, 4), "exporter")


def test_import_aptune_and_the_cli_load_no_exporter_or_server():
    """onnx, onnxruntime, FastAPI and uvicorn are optional: imported only when exporting or serving."""
    code = ("import sys, aptune, aptune.cli; aptune.cli.build_parser(); "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript', 'fastapi', 'uvicorn', 'starlette', "
            "'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
