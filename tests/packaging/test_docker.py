"""The Docker files: docker-compose.yml is valid for `docker compose` (where its compose
plugin is installed) and runs the three nodes of conf/cluster-docker.toml, each with its own
security directory mounted where the file's [security] paths point; the Dockerfile
uses only known instructions and runs raftkvd as a non-root user with a volume, the ports
and a health check; and a cluster whose endpoints are host names (as in Docker, where
each node binds its service name) elects a leader and passes that health check."""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cluster import ProcCluster, clean_env, wait_for

from raftkvd.settings import load_cluster

RUN_TIMEOUT_S = 60.0
BASE_IMAGE = "python:3.11-slim"
DATA_DIR = "/var/lib/raftkvd"
KNOWN_INSTRUCTIONS = frozenset({
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
})
"""Every instruction of the Dockerfile reference."""
HEALTHCHECK = [sys.executable, "-m", "raftkvd.healthcheck"]

Instruction = tuple[str, str]


def dockerfile(repo: Path) -> list[Instruction]:
    """(INSTRUCTION, arguments) in order: comments and parser directives dropped,
    backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in (repo / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also what a comment line inside a continuation is
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def arguments(instructions: list[Instruction], keyword: str) -> list[str]:
    return [args for key, args in instructions if key == keyword]


def image_env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in arguments(instructions, "ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def docker_cluster(repo: Path) -> dict[str, Any]:
    return tomllib.loads((repo / "conf" / "cluster-docker.toml").read_text())


def mount_target(mount: str | dict[str, Any]) -> str:
    """Where a compose volume (short "SOURCE:TARGET[:MODE]" or long syntax) is mounted."""
    return mount["target"] if isinstance(mount, dict) else mount.split(":")[1]


def host_of(endpoint: str) -> str:
    return endpoint.removeprefix("tcp://").rpartition(":")[0]


def port_of(endpoint: str) -> int:
    return int(endpoint.rpartition(":")[2])


def compose_command() -> list[str]:
    """`docker compose` (the CLI plugin) or the standalone docker-compose; skip without."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                               timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    if docker is None:
        pytest.skip("no docker CLI on this machine: cannot run `docker compose config`")
    said = (probe.stderr.strip().splitlines() or ["no output"])[0][:200]
    pytest.skip(f"the docker CLI is installed but not its compose plugin (`docker compose version`: "
                f"{said}), nor docker-compose: cannot run `docker compose config`")


def test_the_compose_file_is_valid_for_docker_compose(repo: Path) -> None:
    """`config --services` validates the whole file (schema, interpolation, references) and
    lists the services; both `docker compose` and the old docker-compose 1.x have it."""
    result = subprocess.run(
        [*compose_command(), "--file", str(repo / "docker-compose.yml"), "config", "--services"],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL, cwd=repo,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["node1", "node2", "node3"]


def test_the_compose_services_are_the_nodes_of_the_docker_cluster_file(repo: Path) -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.yml")
    compose = yaml.safe_load((repo / "docker-compose.yml").read_text())
    services = compose["services"]
    config_path = image_env(dockerfile(repo))["RAFTKVD_CONFIG"]
    load_cluster(repo / "conf" / "cluster-docker.toml", env={})  # valid, host names included
    nodes = docker_cluster(repo)["node"]
    security = docker_cluster(repo)["security"]
    security_dir = os.path.commonpath([security[key] for key in ("curve_dir", "tls_cert_file",
                                                                 "tls_key_file", "tokens_file")])
    assert security_dir.startswith("/etc/raftkvd/"), security_dir
    assert sorted(services) == sorted(host_of(node["raft"]) for node in nodes)
    data_volumes = set()
    sources = set()
    for node in nodes:
        name = host_of(node["raft"])
        service = services[name]
        assert host_of(node["client"]) == host_of(node["http"]) == service["hostname"] == name
        assert service["environment"]["RAFTKVD_ID"] == str(node["id"])
        assert service["build"] == "." and service["restart"] == "on-failure"
        published = {tuple(map(int, p.split(":"))) for p in service["ports"]}
        wanted = {port_of(node[key]) for key in ("raft", "client", "http")}
        assert published == {(port, port) for port in wanted}, name
        mounts = {mount_target(m): m for m in service["volumes"]}
        assert mounts[config_path] == f"./conf/cluster-docker.toml:{config_path}:ro"
        assert node["data_dir"] == DATA_DIR and mounts[DATA_DIR].split(":")[0] in compose["volumes"]
        data_volumes.add(mounts[DATA_DIR].split(":")[0])
        # README "Docker": node N's directory of the security files, read-only, and no empty
        # directory made in its place when it is missing
        keys = mounts[security_dir]
        assert keys["type"] == "bind" and keys["read_only"] is True, keys
        assert keys["bind"] == {"create_host_path": False}, keys
        assert keys["source"].endswith(f"/node{node['id']}"), keys
        sources.add(keys["source"])
    assert len(data_volumes) == len(nodes), "each node has a volume of its own"
    assert len(sources) == len(nodes), "each node mounts its own security directory"


def test_the_dockerfile_uses_known_instructions_and_runs_raftkvd_as_a_non_root_user(
    repo: Path,
) -> None:
    instructions = dockerfile(repo)
    unknown = [key for key, _ in instructions if key not in KNOWN_INSTRUCTIONS]
    assert unknown == []
    assert instructions[0] == ("FROM", BASE_IMAGE)
    keys = [key for key, _ in instructions]
    users = arguments(instructions, "USER")
    assert users and users[-1] not in ("root", "0") and keys.index("USER") < keys.index("ENTRYPOINT")
    assert arguments(instructions, "VOLUME") == [DATA_DIR]
    assert arguments(instructions, "ENTRYPOINT") == ['["raftkvd", "run"]']
    assert any(args.startswith("pip install .") for args in arguments(instructions, "RUN"))
    (healthcheck,) = arguments(instructions, "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["python", "-m", "raftkvd.healthcheck"]')

    exposed: set[int] = set()
    for args in arguments(instructions, "EXPOSE"):
        for item in args.split():
            low, _, high = item.partition("-")
            exposed.update(range(int(low), int(high or low) + 1))
    for node in docker_cluster(repo)["node"]:
        assert {port_of(node[key]) for key in ("raft", "client", "http")} <= exposed

    ignored = [line.strip() for line in (repo / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for args in arguments(instructions, "COPY"):
        *sources, _ = args.split()
        for source in sources:
            assert (repo / source).exists(), source
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


def run_healthcheck(cluster: ProcCluster, node_id: int) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "RAFTKVD_CONFIG": str(cluster.config_path), "RAFTKVD_ID": str(node_id)}
    return subprocess.run(HEALTHCHECK, capture_output=True, text=True, env=env,
                          timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)


def test_a_cluster_addressed_by_host_names_elects_a_leader_and_passes_the_healthcheck(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster()
    text = cluster.config_path.read_text()
    assert "127.0.0.1" in text
    cluster.config_path.write_text(text.replace("127.0.0.1", "localhost"))
    assert all(host_of(n.raft) == "localhost" for n in load_cluster(cluster.config_path, env={}).nodes)

    leader = cluster.start_all()
    for node_id in cluster.ids:
        # start_all returns once a leader is elected; a follower may hear of it a moment later
        result = wait_for(f"node {node_id}'s healthcheck to pass",
                          lambda n=node_id: (r := run_healthcheck(cluster, n)).returncode == 0 and r,
                          10.0)
        assert '"status": "healthy"' in result.stdout

    survivor = next(i for i in cluster.ids if i != leader)
    for node_id in cluster.ids:
        if node_id != survivor:
            cluster.stop(node_id)
    unhealthy = wait_for("the lone survivor's healthcheck to fail",
                         lambda: (r := run_healthcheck(cluster, survivor)).returncode == 1 and r, 30.0)
    assert " 503 " in unhealthy.stdout
    cluster.stop(survivor)
    down = run_healthcheck(cluster, survivor)
    assert down.returncode == 1 and "no answer" in down.stdout
