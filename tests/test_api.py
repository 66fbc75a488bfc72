"""The public API: every exported name resolves to the object its module defines, lazily."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import crisp
from crisp import api


@pytest.mark.parametrize("name", sorted(api.EXPORTS))
def test_every_exported_name_is_the_implementing_object(name):
    module, _, attribute = api.EXPORTS[name].partition(":")
    expected = getattr(importlib.import_module(module), attribute)
    assert getattr(api, name) is expected
    if name in api.TOP_LEVEL:
        assert getattr(crisp, name) is expected
        assert name in crisp.__all__
    else:  # a submodule of crisp has this name
        assert importlib.import_module(f"crisp.{name}") is getattr(crisp, name)


def test_every_cli_verb_has_its_library_function():
    from crisp.cli import app

    verbs = {c.name for c in app.registered_commands}
    documented = {line.split("``")[1].split()[1] for line in api.__doc__.splitlines()
                  if line.startswith("``crisp ")}
    # verbs without a per-verb library function of their own: listing and matching helpers
    assert verbs - documented <= {"models", "match"}, verbs - documented


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError):
        api.no_such_function  # noqa: B018
    with pytest.raises(AttributeError):
        crisp.no_such_function  # noqa: B018


def test_import_crisp_does_not_import_torch():
    code = "import sys, crisp; crisp.CrispError; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
