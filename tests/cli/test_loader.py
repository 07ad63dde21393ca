"""Finding the app from MODULE:APP, and the curl line the banner prints for it."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import perdure
from perdure.cli import cli
from perdure.cli.loader import AppLoadError, load_app, split_spec
from perdure.cli.sample import curl_example, sample_body, sample_from_schema

ROOT = Path(__file__).resolve().parents[2]


def test_split_spec() -> None:
    assert split_spec("pkg.mod:app") == ("pkg.mod", "app")
    assert split_spec("pkg.mod") == ("pkg.mod", "app")
    assert split_spec("dir/file.py:my_app") == ("dir/file.py", "my_app")
    assert split_spec("C:\\dir\\file.py") == ("C:\\dir\\file.py", "app")
    with pytest.raises(AppLoadError, match="names no module"):
        split_spec(":app")


def test_loads_by_file_path_and_by_module(monkeypatch: pytest.MonkeyPatch) -> None:
    app = load_app(str(ROOT / "examples" / "user_updates.py") + ":app")
    assert isinstance(app, perdure.App) and app.service("userUpdates") is not None
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(ROOT))])
    assert load_app("bench.core:app").service("benchUsers") is not None


def test_errors_say_what_to_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mod.py").write_text("import perdure\nthing = 3\n")
    (tmp_path / "boom.py").write_text("raise RuntimeError('kaput')\n")
    (tmp_path / "deps.py").write_text("import not_installed_anywhere\n")
    with pytest.raises(AppLoadError, match=r"no such file: nothere.py"):
        load_app("nothere.py:app")
    with pytest.raises(
        AppLoadError, match=r"cannot import module 'no_such_module_x'.*your project's directory"
    ):
        load_app("no_such_module_x:app")
    with pytest.raises(AppLoadError, match=r"mod.py has no attribute 'app'"):
        load_app("mod.py:app")
    with pytest.raises(AppLoadError, match=r"mod.py:thing is a int, not a perdure.App"):
        load_app("mod.py:thing")
    with pytest.raises(AppLoadError, match=r"(?s)importing boom.py raised an exception.*RuntimeError: kaput"):
        load_app("boom.py")
    with pytest.raises(AppLoadError, match=r"(?s)importing module 'deps' raised.*not_installed_anywhere"):
        load_app("deps:app")


def test_dev_with_a_bad_app_prints_the_fix_and_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dev", str(tmp_path / "missing.py:app")])
    assert result.exit_code == 1
    assert result.output.startswith("error: no such file:")
    assert "Traceback" not in result.output


def test_sample_bodies_follow_the_input_schema() -> None:
    app = load_app(str(ROOT / "examples" / "user_updates.py"))
    handler = app.handler("userUpdates", "updateUserEvent")
    assert handler is not None
    body, content_type = sample_body(handler)
    assert content_type == "application/json" and body is not None
    assert json.loads(body) == {
        "profile": {"name": "alice"},
        "permissions": ["example"],
        "resources": ["example"],
    }
    handler.input_serde.decode(body)  # the sample is valid input
    schema = {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 5}]}
    assert sample_from_schema(schema) == 5
    assert sample_from_schema({"type": "string", "enum": ["b", "a"]}) == "b"
    assert sample_from_schema({"type": "object", "properties": {"email": {"type": "string"}}}) == {
        "email": "alice@example.com"
    }


def test_curl_example_is_a_valid_shell_line() -> None:
    greeter = perdure.Service("greeter")

    @greeter.handler()
    async def greet(ctx: perdure.Context, name: str) -> str:
        return name

    line = curl_example(perdure.App([greeter]), "http://127.0.0.1:8080")
    assert line is not None
    assert shlex.split(line) == [
        "curl",
        "-X",
        "POST",
        "http://127.0.0.1:8080/greeter/greet",
        "-H",
        "content-type: application/json",
        "-d",
        '"alice"',
    ]
