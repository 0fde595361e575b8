"""Small helpers shared by the tests."""
import torch


def randomise(model, seed: int = 1):
    """Non-trivial values everywhere (biases, norms, head, APT scales above 1): a misplaced tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim == 1 and p.shape[0] > 0 else 0.0))
    return model


def video(b=2, t=4, s=32):
    """A random clip batch (B, 3, T, S, S) for the tiny zoo model."""
    return torch.randn(b, 3, t, s, s)


def plain_model(backbone: str = "tiny", num_classes: int = 5, **kw):
    """A tiny backbone with non-zero biases everywhere (q/v biases included), in eval mode."""
    import aptune
    model = aptune.create_model(backbone, num_classes=num_classes, **kw)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return model.eval()


def method_model(plain, name, **options):
    """Method `name` applied to a model of `plain`'s config, holding a copy of `plain`'s weights."""
    import aptune
    model = aptune.create_model(plain.config, method=name, **options)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected, f"{name} renamed backbone parameters: {unexpected[:3]}"
    own = set(model.tuning.trainable_names) if not model.tuning.method.full_state else set()
    assert set(missing) <= own, f"{name}: backbone keys missing {sorted(set(missing) - own)[:3]}"
    return model


def clip_for(model, b: int = 2):
    """A random clip batch of the model's configured clip size."""
    c = model.config
    return torch.randn(b, c.in_chans, c.num_frames, c.img_size, c.img_size)


class FixedDraw:
    """Stands in for random.Random: randrange returns the given values in turn."""

    def __init__(self, *values):
        self.values, self.calls = list(values), []

    def randrange(self, *args):
        self.calls.append(args)
        return self.values.pop(0)
