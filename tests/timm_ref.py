"""timm's RandAugment as a test reference, without torchvision.

timm is installed without its dependencies (`make install`: `pip install --no-deps timm`): its package
`__init__` imports torchvision, which does not import against this CPU torch, so only the module
`timm/data/auto_augment.py` (PIL + numpy) is loaded, from its file, without importing the timm package."""
import importlib.util
from pathlib import Path

from PIL import Image


def timm_auto_augment():
    spec = importlib.util.find_spec("timm")            # locates the package without running its __init__
    assert spec is not None, "timm is a test dependency (make install puts it in .venv with --no-deps)"
    path = Path(spec.submodule_search_locations[0]) / "data" / "auto_augment.py"
    mod_spec = importlib.util.spec_from_file_location("timm_auto_augment", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


AA = timm_auto_augment()
# the APT authors' hyper-parameters (wgcban/apt video_transforms.create_random_augment at 224 px, with
# run_class_apt.py's default --train_interpolation bicubic)
AUTHORS_HPARAMS = {"translate_const": int(224 * 0.45), "interpolation": Image.BICUBIC}
