import torch

from audit.builtin import shapes


def test_known_classes_and_balance():
    assert len(shapes.CLASSES) >= 6
    batch = shapes.render(range(60), "test")
    counts = torch.bincount(batch.labels, minlength=len(shapes.CLASSES))
    assert counts.tolist() == [60 // len(shapes.CLASSES)] * len(shapes.CLASSES)


def test_sample_depends_only_on_its_index_split_and_seed():
    a = shapes.render([3, 7], "test")
    b = shapes.render(range(10), "test")
    assert torch.equal(a.images[0], b.images[3]) and torch.equal(a.images[1], b.images[7])
    assert torch.equal(a.masks[1], b.masks[7])
    other_split = shapes.render([3], "train")
    other_seed = shapes.render([3], "test", seed=1)
    assert not torch.equal(other_split.images[0], a.images[0])
    assert not torch.equal(other_seed.images[0], a.images[0])


def test_images_and_masks_are_sane():
    batch = shapes.render(range(36), "val")
    assert batch.images.shape == (36, 3, 64, 64)
    assert batch.images.min() >= 0 and batch.images.max() <= 1
    area = batch.masks.float().mean(dim=(1, 2))
    # every object is visible and is an object, not the whole image
    assert (area > 0.01).all() and (area < 0.5).all()
    # the object differs from its surroundings: the mask explains image content
    inside = (batch.images * batch.masks[:, None]).sum((2, 3)) / batch.masks.sum((1, 2))[:, None]
    outside = (batch.images * ~batch.masks[:, None]).sum((2, 3)) / (~batch.masks).sum((1, 2))[:, None]
    assert ((inside - outside).norm(dim=1) > 0.2).float().mean() > 0.9


def test_positions_and_scales_vary():
    batch = shapes.render(range(48), "test")
    ys = torch.stack([torch.nonzero(m).float().mean(0) for m in batch.masks])
    assert ys[:, 0].std() > 5 and ys[:, 1].std() > 5
    area = batch.masks.float().sum((1, 2))
    assert area.max() > 2 * area.min()
