"""--out is checked before any work (audit.engine.output)."""

import pytest

from audit.engine.output import check_out_folder
from audit.errors import UserError


def test_a_folder_that_exists_or_can_be_created_passes_and_nothing_is_left(tmp_path):
    check_out_folder(tmp_path)
    check_out_folder(tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []  # the probe folder is removed, nothing created


def test_a_file_in_the_way_is_refused_in_one_line(tmp_path):
    blocker = tmp_path / "report.md"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file; give a folder path"):
        check_out_folder(blocker)
    with pytest.raises(UserError, match=f"{blocker} is a file, so the folder cannot be created"):
        check_out_folder(blocker / "run")


def test_an_uncreatable_folder_is_refused_before_the_run(tmp_path, monkeypatch):
    import tempfile

    def refuse(**_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(UserError, match="cannot create a folder in .*Permission denied"):
        check_out_folder(tmp_path / "run")
