"""The production compose file: valid, and every command and variable it uses exists here."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bienc.cli import build_parser
from bienc.config.settings import Settings
from tests.conftest import skip_without

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _compose_config(**variables: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    if tool is None:
        skip_without("docker-compose", "Debian's package validates compose files")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIENC_")} | variables
    return subprocess.run([tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, check=False, env=env)


def test_compose_file_is_valid_with_an_api_key_and_refused_without() -> None:
    accepted = _compose_config(BIENC_API_KEY="k" * 24)
    assert accepted.returncode == 0, accepted.stderr
    refused = _compose_config()
    assert refused.returncode != 0
    assert "BIENC_API_KEY" in refused.stderr and "16+ characters" in refused.stderr


def test_only_the_api_is_published_to_the_network(compose: dict[str, Any]) -> None:
    published = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert not published["redis"] and not published["qdrant"] and not published["worker"]
    assert all(port.startswith("127.0.0.1:") for port in published["flower"])  # no login
    assert published["api"]


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
