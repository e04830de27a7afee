"""Everything an evaluation can check before its work: output folder, config and results files, reference
point, methods, judge. Each failure is one error naming what is wrong, raised before anything is generated."""

from __future__ import annotations

import pytest
import yaml

from polyalign.errors import ConfigError, FileError, ModelLoadError
from polyalign.evaluation import check_before_run, load_config, load_results, parse_config
from tests.test_evaluation_sweep import _config


def test_a_good_config_passes_and_creates_nothing(tmp_path):
    check_before_run(parse_config(_config(tmp_path, judge=None)))
    assert not (tmp_path / "run").exists()


def test_output_dir_that_is_a_file(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(FileError, match="evaluation output folder .*run' is a file, not a directory"):
        check_before_run(parse_config(_config(tmp_path, judge=None)))


def test_output_file_that_is_a_directory(tmp_path):
    (tmp_path / "run" / "report.html").mkdir(parents=True)
    with pytest.raises(FileError, match="report.html' is a directory"):
        check_before_run(parse_config(_config(tmp_path, judge=None)))


def test_reference_point_of_the_wrong_length_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="reference_point has 3 values but there are 2 objectives"):
        parse_config(_config(tmp_path, reference_point=[0.0, 0.0, 0.0]))
    unchecked = parse_config(_config(tmp_path)).model_copy(update={"reference_point": [0.0]})
    with pytest.raises(ConfigError, match="reference_point has 1 values"):
        check_before_run(unchecked)


def test_judge_model_that_does_not_exist(tmp_path):
    config = parse_config(_config(tmp_path, judge={"model": str(tmp_path / "no-judge")}))
    with pytest.raises(ModelLoadError, match="model path not found: .*no-judge"):
        check_before_run(config)
    check_before_run(config, check_judge_model=False)  # a caller that brings its own judge


def test_judge_without_a_second_method(tmp_path):
    config = parse_config(_config(tmp_path, methods=[{"name": "x", "kind": "python", "factory": "a:b"}]))
    with pytest.raises(ConfigError, match="the judge needs two methods"):
        check_before_run(config, check_judge_model=False)


def test_unknown_method_kind(tmp_path):
    config = parse_config(_config(tmp_path, judge=None, methods=[{"name": "x", "kind": "nope"}]))
    with pytest.raises(ConfigError, match="method 'x': unknown policy kind 'nope'"):
        check_before_run(config)


def test_config_file_problems_name_the_file(tmp_path):
    with pytest.raises(FileError, match="config file .* is a directory"):
        load_config(tmp_path)
    path = tmp_path / "eval.yaml"
    path.write_bytes(yaml.safe_dump(_config(tmp_path)).encode("utf-16"))
    with pytest.raises(FileError, match="config file .*eval.yaml' is UTF-16"):
        load_config(path)
    path.write_text("objectives: [a\n")
    with pytest.raises(FileError, match="config file .*eval.yaml' is not valid YAML"):
        load_config(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping of settings, got list"):
        load_config(path)


def test_results_file_that_is_not_text(tmp_path):
    (tmp_path / "results.json").write_bytes(b"\x00\x01binary")
    with pytest.raises(FileError, match="results file .*results.json' is a binary file"):
        load_results(tmp_path)
    (tmp_path / "results.json").unlink()
    (tmp_path / "results.json").mkdir()
    with pytest.raises(FileError, match="results.json' is a directory"):
        load_results(tmp_path)
