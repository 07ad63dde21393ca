"""Settings: defaults < file < environment < flags, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from perdure.cli import cli
from perdure.config import ConfigError, Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "perdure.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings()
    assert s == Settings()
    assert (s.host, s.ingress_port, s.admin_port, s.synchronous) == ("127.0.0.1", 8080, 9070, "FULL")
    assert s.store_url == "sqlite:///.perdure/perdure.db?synchronous=FULL"


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    file = write(tmp_path, 'app = "a:app"\ningress_port = 1111\nadmin_port = 2222\nsynchronous = "normal"\n')
    env = {"PERDURE_INGRESS_PORT": "3333", "PERDURE_LOG_LEVEL": "INFO", "PERDURE_ADMIN_URL": "ignored"}
    s = load_settings(file=file, env=env, flags={"ingress_port": 4444, "host": None})
    assert s.ingress_port == 4444  # flag
    assert s.log_level == "info"  # env, normalized
    assert s.admin_port == 2222  # file
    assert s.synchronous == "NORMAL"  # file, normalized
    assert s.host == "127.0.0.1"  # default (a None flag means "not given")
    assert s.app == "a:app"
    s = load_settings(file=file, env=env)
    assert s.ingress_port == 3333


def test_relative_paths_in_a_file_are_relative_to_the_file(tmp_path: Path) -> None:
    file = write(tmp_path, 'app = "svc/handlers.py:app"\ndb = "data/p.db"\n')
    s = load_settings(file=file)
    assert s.db == str(tmp_path / "data/p.db")
    assert s.app == f"{tmp_path / 'svc/handlers.py'}:app"
    assert load_settings(file=write(tmp_path, 'app = "pkg.mod:app"\ndb = "memory:"')).app == "pkg.mod:app"
    assert load_settings(flags={"db": "memory:"}).store_url == "memory:"


def test_absolute_db_paths_make_four_slash_urls(tmp_path: Path) -> None:
    s = load_settings(flags={"db": str(tmp_path / "x.db"), "synchronous": "off"})
    assert s.store_url == f"sqlite:///{tmp_path}/x.db?synchronous=OFF"
    assert s.store_url.startswith("sqlite:////")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ingres_port = 1", "unknown key 'ingres_port'; did you mean 'ingress_port'?"),
        ("ingress-port = 1", "did you mean 'ingress_port'?"),
        ('ingress_port = "80"', "ingress_port must be an integer port"),
        ("ingress_port = 70000", "ingress_port must be an integer port"),
        ("admin_port = true", "admin_port must be an integer port"),
        ('synchronous = "fast"', "synchronous must be one of FULL"),
        ("drain_timeout = -1", "drain_timeout must be zero or more seconds"),
        ("db = 3", "db must be a string (quote it in TOML)"),
        ("app = ", "is not valid TOML"),
    ],
)
def test_file_errors_name_the_key_and_the_fix(tmp_path: Path, text: str, expected: str) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(file=file)
    message = str(caught.value)
    assert expected in message
    assert str(file) in message


def test_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"PERDURE_ADMIN_PORT": "nine"})
    assert str(caught.value) == (
        "environment variable PERDURE_ADMIN_PORT: admin_port must be an integer port "
        "(0-65535; 0 picks a free port), got 'nine'"
    )
    with pytest.raises(ConfigError, match="PERDURE_DRAIN_TIMEOUT: drain_timeout must be a number"):
        load_settings(env={"PERDURE_DRAIN_TIMEOUT": "soon"})
    # An empty variable counts as unset.
    assert load_settings(env={"PERDURE_HOST": ""}).host == "127.0.0.1"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found: pass an existing file to --config"):
        load_settings(file=tmp_path / "nope.toml")


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.db = "x"  # type: ignore[misc]


# ---- the same through the command line (nothing is started: every case fails before serving)


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_serve_reports_config_errors_in_one_line(tmp_path: Path) -> None:
    file = write(tmp_path, 'app = "x:app"\nport = 8080\n')
    code, out = run(["serve", "--config", str(file)])
    assert code == 1
    assert out.strip().splitlines() == [
        f"error: {file}: unknown key 'port'; known keys: app, db, synchronous, host, ingress_port, "
        "admin_port, drain_timeout, log_level, kafka, kafka_port, partitions, workers, console"
    ]


def test_env_error_reaches_the_command_line(tmp_path: Path) -> None:
    code, out = run(["dev", "x:app"], env={"PERDURE_INGRESS_PORT": "http"})
    assert code == 1
    assert "error: environment variable PERDURE_INGRESS_PORT: ingress_port must be an integer" in out


def test_help_texts_are_documentation() -> None:
    code, out = run(["--help"])
    assert code == 0
    for command in ("dev", "serve", "services", "invocations", "state", "sql"):
        assert f"  {command} " in out
    code, out = run(["serve", "--help"])
    assert "PERDURE_INGRESS_PORT" in out and "Precedence: flag > environment variable > file > default" in out
    code, out = run(["invocations", "--help"])
    assert all(verb in out for verb in ("list", "describe", "cancel", "kill", "purge", "pause", "resume"))
    code, out = run(["--version"])
    assert code == 0 and "perdure, version" in out


def test_the_console_setting(tmp_path: Path) -> None:
    assert Settings().console is False  # `perdure serve` serves it only when asked
    file = write(tmp_path, "console = true\n")
    assert load_settings(file=file).console is True
    assert load_settings(file=file, env={"PERDURE_CONSOLE": "off"}).console is False
    assert load_settings(env={"PERDURE_CONSOLE": "1"}, flags={"console": False}).console is False
    with pytest.raises(ConfigError, match="PERDURE_CONSOLE: console must be true or false"):
        load_settings(env={"PERDURE_CONSOLE": "maybe"})
    with pytest.raises(ConfigError, match="console must be true or false"):
        load_settings(file=write(tmp_path, 'console = "yes"\n'))
