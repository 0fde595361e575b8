"""`aptune prepare` on small fake copies of each official split format, and
`aptune check-videos` on a folder of good and bad files (the real CLI)."""
import json

import pytest

from aptune.cli import main
from aptune.data.prepare import read_class_names, read_list_file

from videos import make_video


def _lists(out):
    return ({s: read_list_file(out / f"{s}.csv") for s in ("train", "val", "test")},
            read_class_names(out / "classes.txt"))


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_ucf101(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "lists"
    sp = raw / "ucfTrainTestlist"
    sp.mkdir(parents=True)
    (sp / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n3 YoYo\n")
    (sp / "trainlist02.txt").write_text("Archery/v_Archery_g01_c01.avi 2\nYoYo/v_YoYo_g02_c01.avi 3\n")
    (sp / "testlist02.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.avi\n")
    for rel in ("Archery/v_Archery_g01_c01.avi", "YoYo/v_YoYo_g02_c01.avi",
                "ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.avi"):
        _touch(raw / "UCF-101" / rel)
    assert main(["prepare", "ucf101", "--root", str(raw), "--out", str(out), "--split", "2"]) == 0
    lists, names = _lists(out)
    assert names == ["ApplyEyeMakeup", "Archery", "YoYo"]
    assert lists["train"] == [("UCF-101/Archery/v_Archery_g01_c01.avi", 1), ("UCF-101/YoYo/v_YoYo_g02_c01.avi", 2)]
    assert lists["val"] == lists["test"] == [("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.avi", 0)]
    # a label that disagrees with classInd is an error naming the file
    (sp / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 1\n")
    (sp / "testlist01.txt").write_text("")
    assert main(["prepare", "ucf101", "--root", str(raw), "--out", str(out), "--split", "1"]) == 2


def test_hmdb51_codes(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "lists"
    sp = raw / "testTrainMulti_7030_splits"
    sp.mkdir(parents=True)
    (sp / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (sp / "wave_test_split1.txt").write_text("d.avi 2\ne.avi 1\n")
    (sp / "wave_test_split2.txt").write_text("d.avi 1\ne.avi 2\n")
    for rel in ("brush_hair/a.avi", "brush_hair/b.avi", "wave/d.avi", "wave/e.avi"):
        _touch(raw / rel)
    assert main(["prepare", "hmdb51", "--root", str(raw), "--out", str(out)]) == 0
    lists, names = _lists(out)
    assert names == ["brush_hair", "wave"]
    assert lists["train"] == [("brush_hair/a.avi", 0), ("wave/e.avi", 1)]
    assert lists["test"] == lists["val"] == [("brush_hair/b.avi", 0), ("wave/d.avi", 1)]


def test_ssv2_templates(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "lists"
    raw.mkdir()
    labels = {"Holding something next to something": "1", "Pushing something from left to right": "0"}
    (raw / "labels.json").write_text(json.dumps(labels))
    (raw / "train.json").write_text(json.dumps([
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "bottle"]},
        {"id": "42326", "label": "pushing a box from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a box"]}]))
    (raw / "validation.json").write_text(json.dumps([
        {"id": "74225", "template": "Pushing [something] from left to right"}]))
    for i in ("78687", "42326", "74225"):
        _touch(raw / "20bn-something-something-v2" / f"{i}.webm")
    assert main(["prepare", "ssv2", "--root", str(raw), "--out", str(out)]) == 0
    lists, names = _lists(out)
    assert names == ["Pushing something from left to right", "Holding something next to something"]
    pre = "20bn-something-something-v2/"
    assert lists["train"] == [(pre + "78687.webm", 1), (pre + "42326.webm", 0)]
    assert lists["val"] == lists["test"] == [(pre + "74225.webm", 0)]
    (raw / "validation.json").write_text(json.dumps([{"id": "1", "template": "Flying [something]"}]))
    assert main(["prepare", "ssv2", "--root", str(raw), "--out", str(out)]) == 2


def test_kinetics_layouts(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "lists"
    raw.mkdir()
    (raw / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                   "abseiling,aaa,0,10,train\n\"air drumming\",bbb,14,24,train\n"
                                   "abseiling,gone,5,15,train\n")
    (raw / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                      "air drumming,ccc,3,13,val\n")
    _touch(raw / "train" / "abseiling" / "aaa_000000_000010.mp4")       # split/label layout
    _touch(raw / "train" / "bbb_000014_000024.mp4")                    # flat split layout
    _touch(raw / "val" / "air drumming" / "ccc_000003_000013.mp4")
    assert main(["prepare", "kinetics", "--root", str(raw), "--out", str(out)]) == 0
    lists, names = _lists(out)
    assert names == ["abseiling", "air drumming"]
    assert lists["train"] == [("train/abseiling/aaa_000000_000010.mp4", 0), ("train/bbb_000014_000024.mp4", 1)]
    assert lists["val"] == lists["test"] == [("val/air drumming/ccc_000003_000013.mp4", 1)]
    assert "1 of 3 listed videos not found" in capsys.readouterr().out


def test_folder(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "lists"
    for c in ("b_run", "a_sit"):
        for k in range(5):
            _touch(raw / c / f"{k}.mp4")
    (raw / "a_sit" / "readme.txt").write_text("not listed")
    assert main(["prepare", "folder", "--root", str(raw), "--out", str(out), "--val-fraction", "0.2"]) == 0
    lists, names = _lists(out)
    assert names == ["a_sit", "b_run"]
    assert lists["val"] == [("a_sit/4.mp4", 0), ("b_run/4.mp4", 1)]
    assert len(lists["train"]) == 8 and ("b_run/0.mp4", 1) in lists["train"]


def test_missing_split_files_error(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    assert main(["prepare", "ucf101", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "o")]) == 2
    assert "classInd.txt not found" in capsys.readouterr().err


@pytest.fixture
def mixed(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    make_video(d / "good.mp4", num_frames=30)
    make_video(d / "good.webm", num_frames=30)
    make_video(d / "short.avi", num_frames=8)
    (d / "zero.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is text, not a video\n" * 10)
    data = make_video(d / "full.mp4", num_frames=30, faststart=True).read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 2])
    names = ["good.mp4", "good.webm", "short.avi", "zero.mp4", "notes.mp4", "cut.mp4", "gone.mp4"]
    (tmp_path / "list.csv").write_text("".join(f"{n} {k % 2}\n" for k, n in enumerate(names)))
    return tmp_path


def test_check_videos_report(mixed, capsys):
    rc = main(["check-videos", str(mixed / "list.csv"), "--root", str(mixed / "mixed"),
               "--num-frames", "4", "--sampling-rate", "4", "--json", "--no-progress"])
    assert rc == 1
    rep = json.loads(capsys.readouterr().out)
    got = {k: sorted(i["path"].rsplit("/", 1)[1] for i in v) for k, v in rep["problems"].items()}
    assert got == {"missing": ["gone.mp4"], "empty": ["zero.mp4"], "truncated": ["cut.mp4"],
                   "undecodable": ["notes.mp4"], "too_short": ["short.avi"]}
    assert (rep["total"], rep["ok"], rep["bad"], rep["min_frames"]) == (7, 2, 5, 13)
    # text report names each bad path; a clean list exits 0
    (mixed / "good.csv").write_text("good.mp4 0\ngood.webm 1\n")
    assert main(["check-videos", str(mixed / "list.csv"), "--root", str(mixed / "mixed"), "--no-progress",
                 "--num-frames", "4"]) == 1
    text = capsys.readouterr().out
    assert all(n in text for n in ("gone.mp4", "zero.mp4", "cut.mp4", "notes.mp4", "short.avi"))
    assert main(["check-videos", str(mixed / "good.csv"), "--root", str(mixed / "mixed"), "--no-progress",
                 "--num-frames", "8"]) == 0
