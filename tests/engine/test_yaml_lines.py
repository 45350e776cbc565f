import pytest

from audit.engine.yaml_lines import YamlProblem, line_of, load_with_lines


def test_lines_of_keys_and_items():
    text = "name: x\nexplainers:\n  - saliency\n  - rise: {grid: 4}\nmodel:\n  source: a\n"
    data, lines = load_with_lines(text)
    assert data["explainers"][1] == {"rise": {"grid": 4}}
    assert lines[("name",)] == 1
    assert lines[("explainers", 0)] == 3
    assert lines[("explainers", 1)] == 4
    assert lines[("explainers", 1, "rise", "grid")] == 4
    assert lines[("model", "source")] == 6
    assert line_of(lines, ("model", "source", "deeper", 3)) == 6
    assert line_of(lines, ("nothing",)) == 1


def test_syntax_error_has_its_line():
    with pytest.raises(YamlProblem) as err:
        load_with_lines("name: x\nmodel:\n  source: [unclosed\n")
    assert err.value.line >= 3
    assert "invalid YAML" in err.value.message


def test_duplicate_keys_are_reported():
    with pytest.raises(YamlProblem) as err:
        load_with_lines("name: a\nseed: 1\nname: b\n")
    assert err.value.line == 3 and "duplicate key 'name'" in err.value.message
