"""The README stays true to the code it documents."""

from __future__ import annotations

import re

from voicebot.platforms import SETTINGS, markdown_table

from .support import ROOT

README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def test_every_setting_is_in_the_configuration_table():
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", CONFIGURATION, re.M))
    assert documented == {s.name for s in SETTINGS}


def test_the_configuration_table_is_the_one_the_settings_write():
    """Regenerate with: python -c 'from voicebot.platforms import markdown_table; print(markdown_table())'"""
    assert markdown_table() in CONFIGURATION


def test_the_test_command_installs_the_test_extra_and_runs_pytest():
    block = README.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    assert "'.[test]'" in block and "pytest" in block


def test_env_example_is_the_one_the_settings_write():
    """Regenerate with: python -c 'from voicebot.platforms import env_example; print(env_example(), end="")'
    > .env.example"""
    from voicebot.platforms import env_example

    written = (ROOT / ".env.example").read_text()
    assert written == env_example()
    assert set(re.findall(r"^# ([A-Z_]+)=", written, re.M)) == {s.name for s in SETTINGS}


def test_the_license_is_the_one_setup_cfg_names():
    assert "license = MIT" in (ROOT / "setup.cfg").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_the_readme_is_a_front_door_and_every_link_of_the_docs_leads_somewhere():
    assert len(README.splitlines()) <= 220
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(((?:docs/)?[a-z-]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not there"
