"""The public API (what `import aptune` gives), gathered from where each part lives: building a model
(factory.py), adapter folders (adapters.py, adapter_files.py). No module of aptune imports this one."""
from .adapters import (
    adapter_state,
    from_pretrained,
    load_adapter,
    push_to_hub,
    save_adapter,
    save_pretrained,
)
from .factory import count_parameters, create_model, print_trainable_parameters, resolve_layout

__all__ = ["adapter_state", "count_parameters", "create_model", "from_pretrained", "load_adapter",
           "print_trainable_parameters", "push_to_hub", "resolve_layout", "save_adapter", "save_pretrained"]
