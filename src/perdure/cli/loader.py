"""Finding the user's `perdure.App` from a `MODULE:APP` string, as uvicorn does for ASGI apps.

load_app("examples.user_updates:app")         # a module importable from the current directory
load_app("examples/user_updates.py:app")      # a file path; its directory goes on sys.path
load_app("examples/user_updates.py")          # the attribute defaults to `app`
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from perdure.sdk.service import App

DEFAULT_ATTRIBUTE = "app"


class AppLoadError(Exception):
    """The app could not be loaded; the message says why and what to change."""


def split_spec(spec: str) -> tuple[str, str]:
    """`"pkg.mod:app"` -> `("pkg.mod", "app")`; a missing attribute means `app`."""
    target, colon, attr = spec.rpartition(":")
    if not colon or "/" in attr or "\\" in attr or attr.endswith(".py"):
        # No colon, or the colon belongs to a Windows drive letter: the whole thing is the target.
        return spec, DEFAULT_ATTRIBUTE
    if not target:
        raise AppLoadError(f"{spec!r} names no module: use MODULE:APP, e.g. examples.user_updates:app")
    return target, attr or DEFAULT_ATTRIBUTE


def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _user_code_failed(what: str) -> AppLoadError:
    """The user's module raised while importing: keep its traceback, minus perdure's frames."""
    detail = "".join(traceback.format_exc(limit=-8)).rstrip()
    return AppLoadError(f"importing {what} raised an exception:\n{detail}")


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise AppLoadError(f"no such file: {path} (check the path before ':' in MODULE:APP)")
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # so the file can import its siblings
    name = path.stem if path.stem.isidentifier() else "perdure_app"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise AppLoadError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise _user_code_failed(str(path)) from None
    return module


def _import_module(name: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # console scripts do not put the current directory on sys.path
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            raise AppLoadError(
                f"cannot import module {name!r}: {e}. Run perdure from your project's directory, "
                f"or pass a file path like path/to/{name.rsplit('.', 1)[-1]}.py:app"
            ) from None
        raise _user_code_failed(f"module {name!r}") from None
    except Exception:
        raise _user_code_failed(f"module {name!r}") from None


def load_app(spec: str) -> App:
    """The `perdure.App` that `spec` names; raises `AppLoadError` with a one-paragraph fix."""
    target, attr = split_spec(spec)
    module = _import_file(Path(target)) if _is_path(target) else _import_module(target)
    where = target
    value = module
    for part in attr.split("."):
        if not hasattr(value, part):
            apps = sorted(n for n, v in vars(module).items() if isinstance(v, App))
            hint = f"; it has {', '.join(f'{where}:{n}' for n in apps)}" if apps else ""
            raise AppLoadError(f"{where} has no attribute {attr!r}{hint}")
        value = getattr(value, part)
    if not isinstance(value, App):
        raise AppLoadError(
            f"{where}:{attr} is a {type(value).__name__}, not a perdure.App: "
            "point at the object built with perdure.App([...])"
        )
    return value
