"""The servers' HTTP/1.1 parser: httptools where installed, h11 otherwise, `PERDURE_HTTP` to choose.

The dev extras install httptools, so the in-process ingress and admin suites run on it; this test
runs the seed example through a real `perdure dev` on each parser, so h11 stays covered too."""

from __future__ import annotations

from pathlib import Path

import pytest

from perdure.runtime import http

from .procs import refused_without, seed_example_through_dev

pytest.importorskip("httptools", reason="the dev extras install httptools (perdure[fast])")


@pytest.mark.parametrize("name", ["httptools", "h11"])
def test_dev_runs_the_seed_example_on_each_parser(tmp_path: Path, name: str) -> None:
    assert f"loop, {name}" in seed_example_through_dev(tmp_path, {http.PARSER_ENV: name})


def test_the_default_is_httptools_when_installed_and_the_env_can_force_either() -> None:
    assert http.parser({}) == "httptools"
    assert http.parser({http.PARSER_ENV: "h11"}) == "h11"
    assert http.parser({http.PARSER_ENV: " HTTPTOOLS "}) == "httptools"
    with pytest.raises(http.ParserError, match="expected one of httptools, h11"):
        http.parser({http.PARSER_ENV: "hyper"})


def test_an_unusable_parser_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    proc = refused_without("httptools", tmp_path, {http.PARSER_ENV: "httptools"})
    assert proc.returncode != 0
    assert "httptools is not installed: pip install 'perdure[fast]'" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
