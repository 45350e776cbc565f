"""Two-class images for active fooling: both classes present, stable, recognised by the model."""

import torch

from audit.builtin import pairs, shapes
from audit.builtin.shapes_resnet import INPUT_SPEC, load_reference
from audit.data.sources import PairsData


def test_two_distinct_balanced_classes_and_stable_samples():
    images, a, b = pairs.render_pairs(range(60))
    assert images.shape == (60, 3, 64, 64) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert bool((a != b).all())
    assert torch.bincount(a, minlength=6).tolist() == [10] * 6  # a = i mod 6
    again, a2, b2 = pairs.render_pairs([7, 3])  # a sample does not depend on the others rendered
    assert torch.equal(again[0], images[7]) and torch.equal(again[1], images[3])
    assert (a2.tolist(), b2.tolist()) == ([a[7].item(), a[3].item()], [b[7].item(), b[3].item()])
    other_seed, _, _ = pairs.render_pairs([7], seed=1)
    assert not torch.equal(other_seed[0], images[7])


def test_each_class_sits_whole_in_its_own_half():
    for i in range(30):
        sample = pairs.render_pair(i)
        cols_a = sample.mask_a.any(0).nonzero().flatten()
        cols_b = sample.mask_b.any(0).nonzero().flatten()
        assert len(cols_a) and len(cols_b)
        left, right = (cols_a, cols_b) if cols_a.max() < 32 else (cols_b, cols_a)
        assert left.max() < 32 <= right.min()  # one shape per half, no overlap
        for mask in (sample.mask_a, sample.mask_b):  # nothing cut off: no shape touches the border
            assert mask.any(1).sum() > 2 and not mask[:, [0, -1]].any() and not mask[[0, -1], :].any()


def test_reference_model_names_both_classes_as_its_top_two():
    images, a, b = pairs.render_pairs(range(120))
    model = load_reference()
    with torch.no_grad():
        top2 = model(INPUT_SPEC.normalize(images)).topk(2, dim=1).indices
    both = ((top2 == a[:, None]).any(1) & (top2 == b[:, None]).any(1)).float().mean()
    assert both >= 0.95


def test_dataset_has_no_labels_or_masks():
    data = PairsData("test", 5, 64)
    batch = data.batch(range(2, 5))
    assert batch.ids == (2, 3, 4) and batch.labels.tolist() == [-1, -1, -1] and batch.masks is None
    assert not data.single_label and data.class_names == shapes.CLASSES
    assert data.digest() != PairsData("test", 5, 64, seed=1).digest()
