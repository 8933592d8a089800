"""The README's configuration reference names every declared setting."""

from pathlib import Path

from transfer_daemon.config import settings_reference

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [key for key, *_ in settings_reference() if f"`{key}`" not in README]
    assert missing == []


def test_the_two_setup_commands_are_there() -> None:
    assert "transfer-daemon demo" in README
    assert "python -m pytest -q" in README
