"""`aptune reproduce`: the paper's tables as data (every cell's preset resolves, the paper numbers are the ones
written down), the dry run's plan and compute estimate, and a tiny table end to end over synthetic videos:
trained, killed, resumed, reported beside the paper, and not run again once finished."""
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

import aptune
from aptune import reproduce as R
from aptune.cli import main
from aptune.stats import bootstrap_ci

from engine_data import run_process

# the paper's numbers the table files carry (DESIGN.md section 4; the rest of the paper's tables are not verified)
PAPER = {("table5", "Linear probing"): {"ucf101": 94.3, "hmdb51": 49.8, "ssv2": 29.2},
         ("table5", "APT (200)"): {"ucf101": 97.7}, ("table5", "APT (400)"): {"hmdb51": 70.1, "ssv2": 60.8},
         ("table5", "Full fine-tuning"): {"ucf101": 96.1, "hmdb51": 73.3, "ssv2": 70.8}}


@pytest.mark.parametrize("name,runs", [("table5", 30), ("table6", 21), ("apt_ablations", 14)])
def test_built_in_tables_resolve_every_cell(name, runs):
    table = R.load_table(name)
    cells = R.select(table)
    assert len(cells) == runs and name in R.list_tables()
    for cell in cells:
        cfg = R.cell_config(table, cell, R.Inputs(), None)
        cfg.validate(check_files=False)
        assert cell.checkpoint in table.checkpoints and table.checkpoints[cell.checkpoint].get("hub")
        want = PAPER.get((name, cell.row), {}).get(cell.column)
        assert cell.paper_top1 == want, (cell.row, cell.column)
        if "without" in cell.row:                            # the ablation rows' overrides take effect
            assert cfg.method.options["reparam" if "reparam" in cell.row else "prompt_dropout"] in (False, 0.0)
    if name == "table5":          # K400 pre-training for UCF101 / HMDB51, SSv2's own for SSv2 (the authors' scripts)
        assert {c.column: c.checkpoint for c in cells} == {"ucf101": "videomae-k400", "hmdb51": "videomae-k400",
                                                           "ssv2": "videomae-ssv2"}
        assert table.checkpoints["videomae-k400"]["hub"] == "MCG-NJU/videomae-base"


@pytest.mark.parametrize("name,rows,runs", [("table5", "apt200,full", 6), ("table6", "APT (200)", 3)])
def test_dry_run_prints_presets_paper_numbers_and_compute(name, rows, runs, capsys):
    assert main(["reproduce", name, "--dry-run", "--rows", rows]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("| ") and not ln.startswith("| Method")]
    assert len(lines) == runs
    if name == "table5":
        apt = next(ln.split(" | ") for ln in lines if ln.startswith("| APT (200) | ucf101 |"))
        assert apt[2] == "ucf101/vit_b_apt200.yaml" and apt[3] == "97.7" and apt[4] == "391,205"   # DESIGN.md 4
        assert apt[5] == "186.3"                                                  # aptune.count_flops, one view
        # compute: 9,537 videos x 2 views x 50 epochs x 3 passes + 10 val passes of 3,783 videos, in PFLOP
        with torch.device("meta"):
            gflops = aptune.count_flops(aptune.create_model("videomae-vit-b", num_classes=101, method="apt",
                                                            num_prompts=200))
        assert float(apt[6].replace(",", "")) == pytest.approx((3 * 9537 * 2 * 50 + 10 * 3783) * gflops / 1e6,
                                                               abs=0.5)
        assert float(apt[7]) == pytest.approx(3783 * 15 * gflops / 1e6, abs=0.05)
        assert "videomae-k400: " in out and "MCG-NJU/videomae-base" in out and "30 runs" not in out
    else:
        assert "| APT (200) | videomae-k400-sup | ssv2/videomae_b_k400sup_apt200.yaml | - | 447,342 |" in out
        assert "MCG-NJU/videomae-base-finetuned-kinetics" in out


def test_the_head_shortcut_of_the_estimate_equals_a_direct_count():
    cfg = aptune.config.Config.from_dict({"model": {"name": "tiny"}, "method": {"name": "apt", "num_prompts": 3},
                                          "data": {"num_frames": 4, "img_size": 32}})
    params, gflops = R.model_cost(cfg, 37, {})
    model = aptune.create_model("tiny", num_classes=37, method="apt", num_prompts=3)
    assert params == aptune.count_parameters(model)["trainable"]
    assert gflops == pytest.approx(aptune.count_flops(model), rel=1e-12)


def test_bad_tables_and_names_fail_naming_the_problem(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text(yaml.safe_dump({"columns": {"a": {"checkpoint": "x", "num_classes": 2, "train_videos": 1,
                                                     "val_videos": 1, "test_videos": 1}},
                                   "checkpoints": {"x": {}},
                                   "rows": [{"name": "r", "preset": "p", "paper": {"b": 1}}]}))
    with pytest.raises(ValueError, match=r"t.yaml: row 'r': unknown column\(s\) \['b'\]"):
        R.load_table(str(bad))
    with pytest.raises(ValueError, match="unknown table 'table9'"):
        R.load_table("table9")
    with pytest.raises(ValueError, match=r"--rows: \['nope'\] not in table table5"):
        R.select(R.load_table("table5"), rows=["nope"])


# ---- a tiny table, end to end ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    """Synthetic direction videos (10 classes) and a table of two rows on the tiny model."""
    from safetensors.torch import save_file

    from aptune.data.synthetic import SynthConfig, generate_dataset
    tmp = tmp_path_factory.mktemp("reproduce")
    generate_dataset(tmp / "synth", 10, 4, 6, seed=0, cfg=SynthConfig(frames=8, size=32), progress=False)
    torch.manual_seed(1)
    save_file(aptune.create_model("tiny").state_dict(), str(tmp / "tiny.safetensors"))
    base = {"model": {"name": "tiny"}, "data": {"num_frames": 4, "sampling_rate": 2, "img_size": 32, "flip": False,
                                                "num_workers": 0, "test_clips": 2, "test_crops": 1},
            "optim": {"epochs": 2, "warmup_epochs": 0, "batch_size": 4, "lr": 1.0},
            "eval": {"every_epochs": 1}, "output": {"tensorboard": False, "keep_last": 1},
            "runtime": {"device": "cpu", "log_every_steps": 1}}
    (tmp / "tiny_apt4.yaml").write_text(yaml.safe_dump({**base, "method": {"name": "apt", "num_prompts": 4}}))
    (tmp / "tiny_linear.yaml").write_text(yaml.safe_dump({**base, "method": {"name": "linear"}}))
    table = {"title": "tiny", "source": "a test", "presets_dir": ".",
             "columns": {"synth": {"label": "Synthetic", "presets": "tiny_{}.yaml", "checkpoint": "tiny",
                                   "num_classes": 10, "train_videos": 10, "val_videos": 4, "test_videos": 6}},
             "checkpoints": {"tiny": {"about": "a tiny random backbone"}},
             "rows": [{"name": "APT (4)", "preset": "apt4", "paper": {"synth": {"top1": 60.0, "top5": 90.0}}},
                      {"name": "Linear probing", "preset": "linear", "paper": {"synth": None}}]}
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(table, sort_keys=False))
    return tmp


def _args(t: Path, *extra):
    return ["reproduce", str(t / "tiny.yaml"), "--out", str(t / "out"), "--data", f"synth={t / 'synth'}",
            "--checkpoint", f"tiny={t / 'tiny.safetensors'}", *extra]


def test_tiny_table_end_to_end_killed_resumed_and_not_rerun(tiny_table, capsys):
    t = tiny_table
    # what is missing fails before any work, naming the flag to pass
    assert main(["reproduce", str(t / "tiny.yaml"), "--out", str(t / "out"), "--data", f"synth={t / 'synth'}"]) == 2
    assert "--checkpoint tiny=PATH" in capsys.readouterr().err and not (t / "out").exists()
    nowhere = ["--data", f"synth={t / 'nowhere'}", "--checkpoint", f"tiny={t / 'tiny.safetensors'}"]
    assert main(_args(t)[:4] + nowhere) == 2
    assert "no train.csv (or train.txt)" in capsys.readouterr().err
    # killed in the first row's training, after its first epoch's checkpoint (2 steps per epoch)
    kill_at_step = Path(__file__).with_name("kill_at_step.py")
    killed = run_process([sys.executable, str(kill_at_step), "3", *_args(t)])
    assert killed.returncode == 1, killed.stderr[-2000:]
    apt_run = t / "out" / "runs" / "synth" / "apt_4"
    assert (apt_run / "checkpoints").is_dir() and not (apt_run / "result.json").exists()
    # run again: the first row resumes, the second runs, the report is written
    assert main(_args(t)) == 0
    out = capsys.readouterr().out
    assert "2 runs (0 finished, 2 to run)" in out and f"resumed from {apt_run}" in out
    saved = json.loads((t / "out" / "results.json").read_text())
    assert [(c["row"], c["paper_top1"], c["paper_top5"]) for c in saved["cells"]] == \
        [("APT (4)", 60.0, 90.0), ("Linear probing", None, None)]
    for cell in saved["cells"]:
        metrics = json.loads((Path(cell["run_dir"]) / "eval" / "metrics.json").read_text())
        assert cell["top1"] == metrics["video_top1"] and cell["test_videos"] == 6 and cell["views"] == 2
        assert cell["top1_ci"] == list(bootstrap_ci(metrics["video_correct"]))
    apt = saved["cells"][0]
    md = (t / "out" / "results.md").read_text()
    assert "| Method | Synthetic paper | aptune [95% CI] |" in md
    assert f"| APT (4) | 60.0 | {apt['top1']:.1f} [{apt['top1_ci'][0]:.1f}, {apt['top1_ci'][1]:.1f}] |" in md
    assert "| Linear probing | - | " in md
    assert (t / "out" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # finished rows are not run again
    stamp = (apt_run / "result.json").stat().st_mtime_ns
    assert main(_args(t)) == 0
    assert "2 runs (2 finished, 0 to run)" in capsys.readouterr().out
    assert (apt_run / "result.json").stat().st_mtime_ns == stamp


def test_a_real_run_defaults_to_the_tables_hub_id(tiny_table, capsys):
    """No --checkpoint: the table's Hub id is the checkpoint; offline and not cached, the run stops before any
    work with one line naming the id (what a user with the network gets instead is the download)."""
    table = R.load_table("table5")
    cells = R.select(table, rows=["apt200"])
    assert [R.cell_config(table, c, R.Inputs(), None).model.checkpoint for c in cells] == \
        ["MCG-NJU/videomae-base", "MCG-NJU/videomae-base", "MCG-NJU/videomae-base-ssv2"]
    out = tiny_table / "hub_out"
    assert main(["reproduce", "table5", "--rows", "apt200", "--columns", "ucf101", "--out", str(out),
                 "--data", f"ucf101={tiny_table / 'synth'}"]) == 2
    err = capsys.readouterr().err
    assert "model.checkpoint" in err and "MCG-NJU/videomae-base" in err and not out.exists()
