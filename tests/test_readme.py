"""The README's configuration reference names every declared setting."""

import json
import re
from pathlib import Path

from transfer_daemon.config import settings_reference

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [key for key, *_ in settings_reference() if f"`{key}`" not in README]
    assert missing == []


def test_the_two_setup_commands_are_there() -> None:
    assert "transfer-daemon demo" in README
    assert "python -m pytest -q" in README


_ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| (?P<default>[^|]*?) \| (?P<env>[^|]*?) \| (?P<help>.*) \|$", re.M)


def test_the_reference_table_states_each_default_and_variable() -> None:
    table = {m["key"]: m for m in _ROW.finditer(README)}
    wrong = []
    for key, _, default, env, help_text in settings_reference():
        row = table[key]
        expected = ("" if default is None else f"`{json.dumps(default)}`", "" if env is None else f"`{env}`",
                    help_text.replace("|", "\\|"))
        if (row["default"], row["env"], row["help"]) != expected:
            wrong.append((key, (row["default"], row["env"], row["help"]), expected))
    assert wrong == []
