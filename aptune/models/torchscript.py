"""TorchScript archives (torch.jit.save; OpenAI's CLIP `.pt` files) read as a state dict, from the zip,
without running any of the archive's code: module objects become plain attribute holders, tensors are
rebuilt from the zip's storages, and any other global is refused."""
from __future__ import annotations

import collections
import os
import pickle
import zipfile

import torch

from ..errors import CheckpointError, UnsafeCheckpointError

_STORAGES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
             "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
             "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
             "BoolStorage": torch.bool}


class _Archived:
    """A TorchScript object (a module) as plain data: the attributes it was pickled with, none of its code."""

    def __setstate__(self, state):
        self.attrs = state if isinstance(state, dict) else {}


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class _ArchiveUnpickler(pickle.Unpickler):
    """Reads an archive's data.pkl: module objects become `_Archived`, tensors are rebuilt from the zip's
    storages; any other global is refused, so nothing the file names is imported or run."""

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str, path: str):
        super().__init__(file)
        self.zf, self.prefix, self.path = zf, prefix, path
        self.storages: dict[str, torch.storage.TypedStorage] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            return _Archived
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
            return getattr(torch._utils, name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        raise UnsafeCheckpointError(f"{self.path}: TorchScript archive: refusing to unpickle {module}.{name}; only "
                                    "modules, tensors and storages are read (nothing from the file was run)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"{self.path}: TorchScript archive: unexpected persistent id {pid!r}")
        _, kind, key, _, _ = pid
        if key not in self.storages:
            data = bytearray(self.zf.read(f"{self.prefix}/data/{key}"))
            raw = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
            self.storages[key] = torch.storage.TypedStorage(wrap_storage=raw.untyped_storage(), dtype=kind.dtype,
                                                            _internal=True)
        return self.storages[key]


def _flatten(obj: _Archived, prefix: str, out: dict) -> None:
    for name, v in obj.attrs.items():
        if isinstance(v, torch.Tensor):
            out[prefix + name] = v
        elif isinstance(v, _Archived):
            _flatten(v, f"{prefix}{name}.", out)


def read_torchscript(path: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """The tensors of a TorchScript archive (torch.jit.save, OpenAI's CLIP `.pt` files) by their module
    paths, as `model.state_dict()` names them, read from the zip without running the archive's code;
    None for a file that is not a TorchScript archive."""
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        return None
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):        # damaged: torch.load (the caller's next try) says how
        return None
    with zf:
        names = zf.namelist()
        data = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not data or not any(n.endswith("/constants.pkl") for n in names):   # a torch.save zip, not TorchScript
            return None
        prefix = data[0][:-len("/data.pkl")]
        try:
            if f"{prefix}/byteorder" in names and zf.read(f"{prefix}/byteorder").decode().strip() != "little":
                raise CheckpointError(f"{path}: a big-endian TorchScript archive; re-save it on a little-endian "
                                      "machine")
            with zf.open(data[0]) as f:
                root = _ArchiveUnpickler(f, zf, prefix, path).load()
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError,
                zipfile.BadZipFile, OSError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{path}: not a readable TorchScript archive ({type(e).__name__}: {e})") from None
    if not isinstance(root, _Archived):
        raise CheckpointError(f"{path}: TorchScript archive holds a {type(root).__name__}, not a module")
    out: dict[str, torch.Tensor] = {}
    _flatten(root, "", out)
    return out
