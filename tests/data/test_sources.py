import pytest
import torch

from audit.data.sources import FolderData
from audit.errors import UserError
from audit.spec import InputSpec
from tests.engine.test_user_inputs import make_folder

SPEC = InputSpec(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_folder_selection_is_seeded_stable_and_labelled(tmp_path):
    root = make_folder(tmp_path / "img", classes=("b", "a"), per_class=4)
    data = FolderData(root, 5, SPEC, seed=3, labels=None)
    again = FolderData(root, 5, SPEC, seed=3, labels=None)
    assert data.ids == again.ids and len(data) == 5 and list(data.ids) == sorted(data.ids)
    assert data.class_names == ("a", "b")  # sorted folder names, as ImageFolder
    batch = data.batch(range(5))
    assert batch.images.shape == (5, 3, 32, 32) and 0 <= float(batch.images.min())
    mapped = FolderData(root, 5, SPEC, seed=3, labels={"a": 7, "b": 2})
    assert batch.labels.tolist() == [c for _, c in data.files]
    assert set(batch.labels.tolist()) <= {0, 1}
    index = {"a": 7, "b": 2}
    assert mapped.batch(range(5)).labels.tolist() == [
        index[mapped.class_names[c]] for _, c in mapped.files]
    with pytest.raises(UserError, match="no model index for the class folder"):
        FolderData(root, 5, SPEC, seed=3, labels={"a": 1})


def test_corrupt_files_fail_or_are_left_out_within_max_corrupt(tmp_path):
    root = make_folder(tmp_path / "img", per_class=3)
    bad = root / "cat" / "1.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(UserError, match="1 image\\(s\\) cannot be decoded"):
        FolderData(root, 2, SPEC, seed=0, labels=None)
    data = FolderData(root, 5, SPEC, seed=0, labels=None, max_corrupt=1)
    assert len(data) == 5 and bad not in [p for p, _ in data.files]
    assert torch.isfinite(data.batch(range(5)).images).all()
    with pytest.raises(UserError, match="only 5 usable images"):
        FolderData(root, 6, SPEC, seed=0, labels=None, max_corrupt=1)
