"""deploy/ and docs/operations.md: well-formed, hardened as promised, and in step with the code."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from fabstir_node.config import OPTIONS, Settings, markdown_table
from fabstir_node.server.metrics import Metrics
from fabstir_node.service.node import Node

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOC = ROOT / "docs" / "operations.md"
ALL_ENV = [option.env for option in OPTIONS] + ["HOST_PRIVATE_KEY"]


# --- docs/operations.md --------------------------------------------------------------


def test_the_settings_table_is_exactly_the_generated_one():
    text = DOC.read_text()
    match = re.search(r"<!-- settings-table:start[^>]*-->\n(.*?)\n<!-- settings-table:end -->", text, re.S)
    assert match, "docs/operations.md lost its settings-table markers"
    assert match.group(1) == markdown_table(), (
        "docs/operations.md is out of date: run scripts/sync-docs"
    )


def test_every_metric_is_documented():
    text = DOC.read_text()
    metrics = Metrics(Node(Settings()), process=False)
    suffix = {"counter": "_total", "info": "_info"}
    missing = [
        family.name + suffix.get(family.type, "")
        for family in metrics.registry.collect()
        if f"`{family.name + suffix.get(family.type, '')}`" not in text
    ]
    assert not missing, f"metrics missing from docs/operations.md: {missing}"


def test_sizing_gives_measured_memory_per_100k_vectors():
    text = DOC.read_text()
    sizing = text.split("## Sizing", 1)[1].split("\n## ", 1)[0]
    assert "100,000 vectors" in sizing and "scripts/bench" in sizing and "MB RSS" in sizing
    assert "TO BE MEASURED" not in sizing and "PLACEHOLDER" not in sizing


# --- environment: the example file and compose list every setting -----------------------


def test_the_example_environment_file_lists_every_setting():
    text = (DEPLOY / "fabstir-node.env").read_text()
    assigned = {}
    for line in text.splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            assigned.setdefault(m.group(1), (line.startswith("#"), m.group(2).strip()))
    assert [env for env in ALL_ENV if env not in assigned] == []
    assert assigned["HOST_PRIVATE_KEY"][0], "the inline key must stay commented out"
    # active lines hold values the settings parser accepts
    active = {name: value for name, (commented, value) in assigned.items() if not commented}
    Settings.from_sources(active)


def _compose() -> dict:
    text = (DEPLOY / "docker-compose.yml").read_text()
    try:
        import yaml
    except ImportError:
        return _compose_structure(text)
    return yaml.safe_load(text)


def _compose_structure(text: str) -> dict:
    """Without PyYAML: the two services and the node's environment block, by indentation."""
    services: dict[str, dict] = {}
    section = service = None
    in_env = False
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        assert "\t" not in line[:indent], "tabs in YAML indentation"
        if indent == 0:
            section = line.split(":", 1)[0]
        elif section == "services" and indent == 2:
            service = line.strip().rstrip(":")
            services[service] = {"environment": {}}
        elif section == "services" and indent == 4:
            in_env = line.strip() == "environment:"
        elif in_env and indent == 6 and ":" in line:
            key, value = line.strip().split(":", 1)
            services[service]["environment"][key] = value.split("#", 1)[0].strip().strip('"')
    return {"services": services}


def test_compose_runs_the_node_beside_the_bridge_with_every_setting_shown():
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"s5-bridge", "fabstir-node"}
    environment = services["fabstir-node"]["environment"]
    text = (DEPLOY / "docker-compose.yml").read_text()
    assert [env for env in ALL_ENV if env not in environment and f"# {env}" not in text] == []
    assert environment["ENHANCED_S5_URL"] == "http://s5-bridge:5522"
    values = {k: str(v) for k, v in environment.items() if str(v) != ""}
    settings = Settings.from_sources(values)
    assert settings.metrics_enabled and settings.s5_bridge_url == "http://s5-bridge:5522"
    assert "HOST_PRIVATE_KEY" not in environment  # the key itself never goes in a compose file
    if "build" in services["fabstir-node"]:  # parsed by PyYAML
        assert services["fabstir-node"]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert services["fabstir-node"]["depends_on"]["s5-bridge"]["condition"] == "service_healthy"
        assert "127.0.0.1:9090:9090" in services["fabstir-node"]["ports"]
        assert services["fabstir-node"]["ulimits"]["nice"] == 20  # SCHED_IDLE threads can come back


# --- Dockerfile -------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            joined.append(current)
            current = ""
    assert not current, "a continuation line runs off the end"
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1] if " " in item.strip() else "") for item in joined]


def test_dockerfile_is_slim_non_root_and_checks_health():
    instructions = _instructions((DEPLOY / "Dockerfile").read_text())
    known = {"ARG", "FROM", "ENV", "RUN", "WORKDIR", "COPY", "LABEL", "USER", "VOLUME", "EXPOSE",
             "HEALTHCHECK", "STOPSIGNAL", "ENTRYPOINT", "CMD"}
    assert {name for name, _ in instructions} <= known
    stages = [i for i, (name, _) in enumerate(instructions) if name == "FROM"]
    assert len(stages) == 2, "a builder stage and a runtime stage"
    final = instructions[stages[-1]:]
    args = dict(a.split("=", 1) for n, a in instructions if n == "ARG" and "=" in a)
    base = final[0][1].split()[0]
    assert "slim" in args.get(base.strip("${}"), base)
    final_text = " ".join(arguments for _, arguments in final)
    assert not re.search(r"build-essential|gcc|\bmake\b|apt-get install", final_text), "build tools in the final image"
    (user,) = [arguments for name, arguments in final if name == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    (health,) = [arguments for name, arguments in final if name == "HEALTHCHECK"]
    assert "/health" in health and "CMD" in health
    assert any(name == "COPY" and "--from=builder" in arguments for name, arguments in final)
    assert ("STOPSIGNAL", "SIGTERM") in final


def test_dockerignore_keeps_the_context_small():
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert lines[lines.index("**")] == "**" and "!fabstir_node/" in lines


# --- systemd ------------------------------------------------------------------------------


def _unit(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"line {number}: {line}"
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        assert current is not None and "=" in line, f"line {number}: {line}"
        key, value = line.split("=", 1)
        assert re.fullmatch(r"[A-Za-z]+", key), f"line {number}: bad key {key!r}"
        sections[current].append((key, value))
    return sections


def test_systemd_unit_is_hardened():
    unit = _unit((DEPLOY / "fabstir-node.service").read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    service = dict(unit["Service"])  # last value wins, as in systemd (for these keys)
    expected = {
        "DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes", "StateDirectory": "fabstir-node",
        "Restart": "on-failure", "KillSignal": "SIGTERM", "ProtectHome": "yes", "PrivateTmp": "yes",
        "CapabilityBoundingSet": "", "RestartPreventExitStatus": "2",
        "LimitNICE": "20",  # background threads go under SCHED_IDLE and back (fabstir_node/priority.py)
    }
    assert {k: service.get(k) for k in expected} == expected
    assert shlex.split(service["ExecStart"])[1:] == ["serve"]
    assert "-HUP" in service["ExecReload"]
    # the store lands in the state directory: XDG_DATA_HOME=%S makes it /var/lib/fabstir-node/store
    environment = [value for key, value in unit["Service"] if key == "Environment"]
    assert "XDG_DATA_HOME=%S" in environment
    grace = Settings().shutdown_grace_seconds
    assert float(service["TimeoutStopSec"]) > grace
    assert dict(unit["Install"])["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_finds_nothing_but_the_missing_binary(tmp_path):
    unit = tmp_path / "fabstir-node.service"
    unit.write_text((DEPLOY / "fabstir-node.service").read_text())
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "/opt/fabstir-node/bin/fabstir-node is not executable" not in line
    ]
    assert problems == []
