"""The production compose file: valid, and every command and variable it uses exists here."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bienc.cli import build_parser
from bienc.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_file_is_valid() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose (Debian package) is not installed; .ci/run installs it")
    result = subprocess.run([tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_services_run_bienc_commands_that_exist(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for service in ("api", "worker"):
        command = compose["services"][service]["command"]
        assert command[0] == "bienc"
        parser.parse_args(command[1:])  # exits with an error if the CLI has no such command


def test_every_bienc_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    fields = {f"BIENC_{name.upper()}" for name in Settings.model_fields}
    for service in ("api", "worker"):
        env = compose["services"][service]["environment"]
        names = [n for n in env if n.startswith("BIENC_")]
        assert names, service
        assert set(names) <= fields, set(names) - fields
    assert compose["services"]["redis"]["command"][1:3] == ["--appendonly", "yes"]
