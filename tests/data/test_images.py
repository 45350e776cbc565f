"""Images loaded faithfully: bit depth, channels, EXIF orientation, fitting, odd folders and names."""

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from audit.data import images
from audit.data.sources import FolderData, list_image_folder
from audit.errors import UserError
from audit.spec import InputSpec

RGB = InputSpec(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
GREY = InputSpec(16, (0.5,), (0.25,))


def png16(path: Path, array: np.ndarray) -> Path:
    """Write a 16-bit PNG (grey, grey+alpha, RGB or RGBA) byte by byte: Pillow cannot write them all."""
    h, w = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("value", [0, 1000, 30000, 40000, 65535])
def test_sixteen_bit_grey_scaled_by_65535(tmp_path, value):
    path = png16(tmp_path / "g.png", np.full((16, 16), value, np.uint16))
    with Image.open(path) as img:
        assert img.mode == "I;16"
    for spec in (RGB, GREY):
        t = images.load(path, 16, len(spec.mean))
        assert t.shape == (len(spec.mean), 16, 16)
        assert torch.allclose(t, torch.full_like(t, value / 65535), atol=1e-6)


def test_sixteen_bit_tiff_and_colour_png(tmp_path):
    Image.fromarray(np.full((8, 8), 20000, np.uint16)).save(tmp_path / "g.tif")
    assert torch.allclose(images.load(tmp_path / "g.tif", 8, 3), torch.full((3, 8, 8), 20000 / 65535), atol=1e-6)
    colour = np.zeros((8, 8, 3), np.uint16)
    colour[..., 0], colour[..., 1], colour[..., 2] = 65535, 32768, 0
    t = images.load(png16(tmp_path / "c.png", colour), 8, 3)
    # Pillow keeps 8 bits per channel of 16-bit colour: within 1/255 of the true value
    assert torch.allclose(t[:, 0, 0], torch.tensor([1.0, 32768 / 65535, 0.0]), atol=1 / 255)


def test_float_pixels_are_refused(tmp_path):
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(images.ImageProblem, match="value range"):
        images.load(tmp_path / "f.tif", 8, 3)
    (tmp_path / "cls").mkdir()
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "cls" / "f.tif")
    with pytest.raises(UserError, match=r"f.tif \(mode F\)"):
        FolderData(tmp_path, None, RGB, 0, None)


class Brightness(torch.nn.Module):
    """Known answer: class 1 when the mean pixel (undoing the normalisation) is above 0.5."""

    def forward(self, x):
        pixels = RGB.denormalize(x).mean(dim=(1, 2, 3))
        return torch.stack([0.5 - pixels, pixels - 0.5], dim=1) * 10


def test_sixteen_bit_folder_accuracy_is_right(tmp_path):
    # dark (0.3) and bright (0.7) 16-bit images: the brightness model gets every one right only
    # when the 16-bit values are scaled (clipping to white would make every image class 1)
    for name, value in (("0_dark", 0.3), ("1_bright", 0.7)):
        (tmp_path / name).mkdir()
        for i in range(3):
            png16(tmp_path / name / f"{i}.png", np.full((20, 20), round(value * 65535), np.uint16))
    data = FolderData(tmp_path, None, RGB, 0, None)
    batch = data.batch(range(len(data)))
    predicted = Brightness()(RGB.normalize(batch.images)).argmax(1)
    assert torch.equal(predicted, batch.labels)
    assert batch.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_channels_follow_the_models_mean(tmp_path):
    (tmp_path / "a").mkdir()
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    Image.fromarray(rgb).save(tmp_path / "a" / "red.png")
    Image.fromarray(np.full((4, 4), 128, np.uint8)).save(tmp_path / "a" / "grey.png")
    grey = FolderData(tmp_path, None, InputSpec(4, (0.5,), (0.5,)), 0, None).batch(range(2)).images
    colour = FolderData(tmp_path, None, InputSpec(4, (0.5,) * 3, (0.5,) * 3), 0, None).batch(range(2)).images
    assert grey.shape == (2, 1, 4, 4) and colour.shape == (2, 3, 4, 4)
    # files sort as grey.png, red.png; red's luma is ITU-R 601-2: 0.299 * 255 → 76
    assert torch.allclose(grey[0], torch.full((1, 4, 4), 128 / 255))
    assert torch.allclose(grey[1], torch.full((1, 4, 4), 76 / 255))
    assert torch.allclose(colour[0], torch.full((3, 4, 4), 128 / 255))  # grey replicated
    assert torch.equal(colour[1][0], torch.ones(4, 4)) and not colour[1][1:].any()


def test_resize_modes_and_the_share_cut(tmp_path):
    # 64 wide x 32 high: left half white, right half black
    array = np.zeros((32, 64), np.uint8)
    array[:, :32] = 255
    (tmp_path / "a").mkdir()
    Image.fromarray(array).save(tmp_path / "a" / "wide.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "a" / "square.png")
    got = {}
    for mode in ("crop", "pad", "stretch"):
        data = FolderData(tmp_path, None, InputSpec(16, (0.5,), (0.5,)), 0, None, resize=mode)
        got[mode] = (data.batch(range(2)).images[1, 0], data.description)
    crop, crop_note = got["crop"]
    assert crop[:, :7].eq(1).all() and crop[:, 9:].eq(0).all()  # the middle 32 columns survive
    assert "1 of 2 images not square" in crop_note and "cut by the centre crop: mean 25.0 %, max 50.0 %" in crop_note
    pad, pad_note = got["pad"]
    assert pad[:4].eq(0).all() and pad[12:].eq(0).all()  # black bands above and below
    assert pad[4:12, :7].eq(1).all() and pad[4:12, 9:].eq(0).all()  # the whole image in the middle
    assert "padded (black): mean 25.0 %, max 50.0 %" in pad_note
    stretch, stretch_note = got["stretch"]
    assert stretch[:, :7].eq(1).all() and stretch[:, 9:].eq(0).all() and "aspect ratio" in stretch_note


def _exif_jpeg(path: Path, orientation: int) -> None:
    array = np.zeros((8, 16, 3), np.uint8)
    array[:, :8] = 255  # left half white: tells a rotation apart
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[images.EXIF_ORIENTATION_TAG] = orientation
    img.save(path, exif=exif, quality=100)


def test_exif_orientation_reported_and_applied_on_request(tmp_path):
    (tmp_path / "a").mkdir()
    _exif_jpeg(tmp_path / "a" / "turned.jpg", 6)
    _exif_jpeg(tmp_path / "a" / "upright.jpg", 1)
    ignored = FolderData(tmp_path, None, InputSpec(16, (0.5,), (0.5,)), 0, None, resize="stretch")
    assert "EXIF orientation in 1 file(s): a/turned.jpg (rotated 90°); ignored" in ignored.description
    applied = FolderData(tmp_path, None, InputSpec(16, (0.5,), (0.5,)), 0, None, resize="stretch", exif="apply")
    assert "a/turned.jpg (rotated 90°); applied" in applied.description
    stored = ignored.batch(range(1)).images[0, 0]
    upright = applied.batch(range(1)).images[0, 0]
    assert stored[:, :6].gt(0.9).all() and stored[:, 10:].lt(0.1).all()  # white left, as stored
    # orientation 6: the viewer turns the stored image 90° clockwise: white ends on top
    assert upright[:6].gt(0.9).all() and upright[10:].lt(0.1).all()


def test_hidden_folders_skipped_at_any_depth_and_empty_classes_named(tmp_path):
    for rel in ("cat/a.png", "cat/sub/b.png", "cat/.ipynb_checkpoints/a-checkpoint.png",
                "cat/sub/.hidden/c.png", "cat/.d.png", "dog/x.png", ".trash/dog/y.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / rel)
    classes, files, empty = list_image_folder(tmp_path)
    assert classes == ["cat", "dog"] and not empty
    assert [p.relative_to(tmp_path).as_posix() for p, _ in files] == ["cat/a.png", "cat/sub/b.png", "dog/x.png"]
    (tmp_path / "zebra" / ".ipynb_checkpoints").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "zebra" / ".ipynb_checkpoints" / "z.png")
    with pytest.raises(UserError, match="class folder.s. zebra in .* hold no images"):
        FolderData(tmp_path, None, RGB, 0, None)


NAMES = ["with space.png", "ünïcödé 画像.png", "-leading-dash.png", "#hash%percent.png", "semi;colon'quote\".png",
         "new\nline.png", "tab\there.png", "a.b.c.PNG"]


def test_any_file_name_the_os_allows(tmp_path):
    (tmp_path / "c").mkdir()
    names = list(NAMES)
    raw = os.fsencode(tmp_path / "c") + b"/latin1-\xe9t\xe9.png"  # not valid UTF-8
    try:
        with open(raw, "wb") as handle:
            Image.fromarray(np.full((4, 4), 9, np.uint8)).save(handle, format="PNG")
        names.append(os.fsdecode(raw).rsplit("/", 1)[1])
    except OSError:  # a file system that only takes UTF-8 names
        pass
    for i, name in enumerate(NAMES):
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(tmp_path / "c" / name, format="PNG")
    data = FolderData(tmp_path, None, RGB, 0, None)
    assert len(data) == len(names)
    assert data.batch(range(len(data))).images.shape == (len(names), 3, 16, 16)
    assert len(data.digest()) == 64
    print(data.description)  # printable whatever the names


def test_shown_escapes_bytes_that_are_not_utf8():
    assert images.shown(os.fsdecode(b"/x/\xe9.png")) == "/x/\\xe9.png"
