"""Everything user-controlled reaches the reports as text: an ImageFolder class named like an
HTML tag is shown, never parsed (jinja2 autoescape; Markdown and JUnit escape on their own)."""

from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from audit.engine.run import run_suite
from audit.engine.suite import load_suite

HOSTILE = "<img src=x onerror=alert(1)>"


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def hostile_run(tmp_path: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    for name in (HOSTILE, "plain"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(2):
            pixels = (torch.rand(40, 40, 3, generator=gen) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: hostile\nseed: 0\ndevice: cpu\nmodel: {source: builtin:shapes-resnet}\n"
                     "data: {source: folder:images, n: 4, batch_size: 4}\nexplainers: [saliency]\n"
                     "attacks: [none]\nmetrics: [accuracy]\n")
    out = tmp_path / "out"
    run_suite(load_suite(suite), out, cache_dir=None)
    return out


@pytest.mark.slow
def test_a_class_folder_named_like_a_tag_appears_as_text(tmp_path):
    out = hostile_run(tmp_path)
    html = (out / "report.html").read_text()
    parser = _Elements()
    parser.feed(html)
    assert not any(tag == "img" and attrs.get("src") == "x" for tag, attrs in parser.tags)
    assert not any("onerror" in attrs for _, attrs in parser.tags)
    assert HOSTILE in "".join(parser.text)  # shown, as the text it is
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img" not in (out / "report.md").read_text()
    assert "<img" not in (out / "junit.xml").read_text()
