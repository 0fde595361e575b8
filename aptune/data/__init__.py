"""Video data pipeline: decode (PyAV) -> sample (frame indices) -> transform -> datasets."""
from .datasets import BadVideo, VideoDataset, collate_skip_bad
from .decode import BadVideoError, VideoInfo, probe, read_frames
from .prepare import Prepared, prepare, read_list_file, write_list_file, write_prepared

__all__ = ["BadVideo", "BadVideoError", "Prepared", "VideoDataset", "VideoInfo", "collate_skip_bad", "prepare",
           "probe", "read_frames", "read_list_file", "write_list_file", "write_prepared"]
