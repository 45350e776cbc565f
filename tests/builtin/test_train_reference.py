import pytest
import torch

from audit.builtin.shapes_resnet import INPUT_SPEC
from audit.builtin.train_reference import Recipe, augment, evaluate, occlude, train
from audit.seeding import generator


def test_occlusion_masks_part_of_the_chosen_images_only():
    x = torch.randn(64, 3, 16, 16)
    out = occlude(x, generator(0, "t"), prob=0.5)
    changed = (out != x).flatten(1).any(1)
    assert 10 < int(changed.sum()) < 54
    assert torch.equal(occlude(x, generator(0, "t"), prob=0.0), x)


def test_augment_is_deterministic_under_a_seed():
    pixels = torch.rand(8, 3, 16, 16)
    a = augment(pixels, generator(1, "a"), Recipe())
    b = augment(pixels, generator(1, "a"), Recipe())
    assert torch.equal(a, b)
    assert INPUT_SPEC.denormalize(a).min() >= -1e-5


@pytest.mark.slow
def test_the_recipe_still_learns():
    # A short run of the shipped recipe (3 of its 20 epochs, half its data): far from the full
    # run's accuracy, but the loss falls and accuracy is at least twice chance (1/6). Measured
    # here: loss 1.80 -> 1.56, val accuracy 0.47.
    recipe = Recipe(epochs=3, n_train=6000, warmup=0.1)
    model, history = train(recipe, log=lambda _: None)
    losses = [e["loss"] for e in history["epochs"]]
    assert losses[-1] < losses[0] - 0.1
    assert evaluate(model, "val", n=600) > 0.4
