"""The deployment examples run with [security] on (SPEC §8), made exactly as the README says:
its shell blocks make the CurveZMQ keys, the CA and node certificates and the tokens, and
install each host's share (systemd) or prepare each container's mount (Docker); then three
real `raftkvd run` processes with the example's [cluster] and [security] settings serve
raftctl with its key and refuse it without one, serve curl over HTTPS with the CA and a
token, answer 401 without a token, and pass the Docker health check.

One machine plays the three hosts: host N is a directory, and node N runs in it (`env -C`),
with the example's absolute /etc/raftkvd paths made relative, so that every node reads only
what its host was given (its own secret, not the others'). The README's commands run
unchanged but for what a test machine cannot have: the example addresses 10.0.0.N become
127.0.0.N, /etc/raftkvd a host directory, the raftkvd user (uid 10001 in Docker) the user
running the test, and Docker's bind mount a symlink.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from cluster import HOST, RAFTCTL, RAFTKVD, ProcCluster, clean_env, run_cli, wait_for

from raftkv.curve import ClientCurve, ServerKeys, load_secret

pytestmark = pytest.mark.timeout(120)

SCRIPT_TIMEOUT_S = 60.0
CURL_TIMEOUT_S = 10.0
HEALTHY_WITHIN_S = 10.0
SECURITY_DIR = "raftkv-security"
"""What the README's key-making block creates (and cds into)."""
MAKE_MARKER = "raftkvd keygen curve node1 node2 node3"
HOST_MARKER = "install -m 0600 -o raftkvd -g raftkvd"
DOCKER_MARKER = "chown -R 10001:10001"
EXAMPLE_SAN = 'SAN="IP:10.0.0.$N"'
_DOCKER_SAN = re.compile(r'SAN="IP:10\.0\.0\.\$N"\s+# Docker: (SAN="[^"]+")')
_SH_BLOCK = re.compile(r"^( *)```sh\n(.*?)^\1```", re.M | re.S)
_TOKEN = re.compile(r"^rkv_\S+$", re.M)

for tool in ("bash", "openssl", "curl"):
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool}", allow_module_level=True)
if subprocess.run(["env", "-C", "/", "true"], capture_output=True).returncode != 0:
    pytest.skip("needs env -C (GNU coreutils 8.28 or later)", allow_module_level=True)


# ---- the README's commands ------------------------------------------------------------------
def sh_blocks(readme: str) -> list[str]:
    """Every ```sh block of the README, list-item indentation removed."""
    blocks = []
    for match in _SH_BLOCK.finditer(readme):
        indent = len(match.group(1))
        blocks.append("".join(line[indent:] + "\n" for line in match.group(2).splitlines()))
    return blocks


def block_with(readme: str, marker: str) -> str:
    found = [block for block in sh_blocks(readme) if marker in block]
    assert len(found) == 1, f"the README has {len(found)} sh blocks with {marker!r}, not one"
    return found[0]


def replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"the README's command no longer has {old!r}"
    return text.replace(old, new)


def run_sh(script: str, cwd: Path) -> str:
    """`script` in bash, stopping at the first failing command, with this venv's raftkvd
    first on PATH; its stdout."""
    env = {**clean_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{script}\nfailed:\n{result.stderr[-3000:]}"
    return result.stdout


def me() -> tuple[str, str]:
    """(user, group) of this test, in place of the raftkvd user and group."""
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


@dataclass
class Made:
    staging: Path
    """raftkv-security: curve/, clients/, tls/, tokens, node1/..node3/."""
    admin_token: str
    write_token: str

    @property
    def ca(self) -> Path:
        return self.staging / "tls" / "ca.crt"


def make_security(readme: str, root: Path, docker: bool) -> Made:
    script = block_with(readme, MAKE_MARKER)
    if docker:
        found = _DOCKER_SAN.search(script)
        assert found, "the README's key-making block no longer names the Docker SAN line"
        script = replaced(script, EXAMPLE_SAN, found.group(1))
    else:
        script = replaced(script, EXAMPLE_SAN, EXAMPLE_SAN.replace("10.0.0.", "127.0.0."))
    tokens = _TOKEN.findall(run_sh(script, root))
    assert len(tokens) == 2, "the block makes an admin token, then a write token"
    return Made(root / SECURITY_DIR, *tokens)


def install_systemd_host(readme: str, made: Made, host: Path, node_id: int) -> None:
    """Step 4 of the systemd deployment, for host `node_id` (its root is `host`)."""
    user, group = me()
    script = block_with(readme, HOST_MARKER)
    script = replaced(script, "N=1 ", f"N={node_id} ")
    script = replaced(script, "/etc/raftkvd", f"{host}/etc/raftkvd")
    script = replaced(script, "-o raftkvd", f"-o {user}")
    script = replaced(script, "-g raftkvd", f"-g {group}")
    run_sh(script, made.staging)


def prepare_docker(readme: str, made: Made) -> None:
    script = block_with(readme, DOCKER_MARKER)
    run_sh(replaced(script, f"sudo {DOCKER_MARKER}", f"chown -R {os.getuid()}:{os.getgid()}"),
           made.staging)


# ---- the example cluster ------------------------------------------------------------------------
class HostsCluster(ProcCluster):
    """A ProcCluster whose node N runs in its own directory, host N's root."""

    harness_name = "secure example"

    def __init__(self, root: Path, hosts: dict[int, Path]) -> None:
        super().__init__(root, len(hosts), log_level="info")
        self.hosts = hosts

    def node_command(self, node_id: int) -> list[str]:
        return ["env", "-C", str(self.hosts[node_id]), *RAFTKVD]


def as_toml(value: Any) -> str:
    """TOML source of a value of the example files (numbers, strings, booleans, lists of them)."""
    return json.dumps(value)


def relative(path: str) -> str:
    """An absolute /etc/raftkvd/... path, relative to a host's root."""
    assert PurePosixPath(path).is_absolute(), path
    return path.lstrip("/")


def configure(cluster: ProcCluster, example: dict[str, Any]) -> dict[str, str]:
    """The example's [cluster] and [security] on the cluster's own nodes; returns [security]
    as written (its paths relative to a host root)."""
    for key, value in example["cluster"].items():
        cluster.set_cluster_key(key, as_toml(value))
    security = {}
    for key, value in example["security"].items():
        security[key] = relative(value) if key != "open_paths" else value
        cluster.set_section_key("security", key, as_toml(security[key]))
    return security


def follow(cluster: HostsCluster, made: Made, security: dict[str, str]) -> None:
    """The harness's own requests (leader polls) go with raftctl's key, like raftctl's."""
    curve_dir = cluster.hosts[1] / security["curve_dir"]
    cluster.curve = ClientCurve(load_secret(made.staging / "clients" / "ops.key_secret"),
                                ServerKeys(curve_dir, {s.client: i for i, s in cluster.specs.items()}))


@pytest.fixture
def readme(repo: Path) -> str:
    return (repo / "README.md").read_text()


@pytest.fixture
def hosts(tmp_path: Path) -> dict[int, Path]:
    made = {node_id: tmp_path / f"host{node_id}" for node_id in (1, 2, 3)}
    for host in made.values():
        host.mkdir()
    return made


@pytest.fixture
def start(tmp_path: Path, hosts: dict[int, Path]) -> Iterator[Callable[..., HostsCluster]]:
    clusters: list[HostsCluster] = []

    def started(example: dict[str, Any], made: Made) -> HostsCluster:
        cluster = HostsCluster(tmp_path / "cluster", hosts)
        clusters.append(cluster)
        security = configure(cluster, example)
        follow(cluster, made, security)
        cluster.start_all()
        return cluster

    yield started
    for cluster in clusters:
        cluster.close()  # SIGKILLs every node it started, by pid


# ---- what a client sees -------------------------------------------------------------------------
def raftctl(cluster: HostsCluster, *args: str, key: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """raftctl --config on host 1 (where the cluster file's curve_dir resolves)."""
    keyed = ["--key", str(key)] if key is not None else []
    return run_cli(RAFTCTL, "--config", str(cluster.config_path), "--timeout", "5", *keyed, *args,
                   env=env, cwd=cluster.hosts[1])


@dataclass
class Curled:
    code: int
    body: str


def curl(made: Made, url: str, *args: str, token: str | None = None) -> Curled:
    """curl --cacert the example's CA (and a bearer token): the status and the body."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token is not None else []
    result = subprocess.run(
        ["curl", "-sS", "--cacert", str(made.ca), *auth, *args, "-w", "\n%{http_code}", url],
        capture_output=True, text=True, timeout=CURL_TIMEOUT_S, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"curl {url}: {result.stderr.strip()}"
    body, _, code = result.stdout.rpartition("\n")
    return Curled(int(code), body)


def check_clients(cluster: HostsCluster, made: Made, key: Path | None,
                  url_of: Callable[[int], tuple[str, list[str]]], via_env: bool) -> None:
    """raftctl with the key works and without it fails (exit 2); curl with the CA and the write
    token writes and reads on every node, without a token gets 401, and /health is open."""
    env = {"RAFTCTL_KEY": str(key)} if via_env else None
    keyed = {"env": env} if via_env else {"key": key}
    put = raftctl(cluster, "put", "greeting", "hello", **keyed)
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    assert raftctl(cluster, "get", "greeting", **keyed).stdout.strip() == "hello"
    status = raftctl(cluster, "-o", "json", "status", **keyed)
    assert status.returncode == 0, status.stderr
    assert all(node["reachable"] for node in json.loads(status.stdout)), status.stdout

    no_key = raftctl(cluster, "get", "greeting")
    assert no_key.returncode == 2 and "--key" in no_key.stderr, no_key
    plain = run_cli(RAFTCTL, "-e", ",".join(cluster.endpoints()), "--timeout", "5", "get", "greeting")
    assert plain.returncode == 2 and "CurveZMQ" in plain.stderr, plain

    for node_id in cluster.ids:
        url, extra = url_of(node_id)
        written = curl(made, f"{url}/kv/k{node_id}", *extra, "-X", "PUT", "-d", '{"value": "v"}',
                       token=made.write_token)
        assert written.code == 200, written
        read = curl(made, f"{url}/kv/greeting", *extra, token=made.write_token)
        assert (read.code, json.loads(read.body)["value"]) == (200, "hello"), read
        assert curl(made, f"{url}/kv/greeting", *extra).code == 401
        assert curl(made, f"{url}/health", *extra).code == 200


def healthcheck(cluster: HostsCluster, node_id: int) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, as the container runs it (RAFTKVD_CONFIG, _ID)."""
    env = {**clean_env(), "RAFTKVD_CONFIG": str(cluster.config_path), "RAFTKVD_ID": str(node_id)}
    return subprocess.run([sys.executable, "-m", "raftkvd.healthcheck"], capture_output=True,
                          text=True, env=env, cwd=cluster.hosts[node_id], timeout=SCRIPT_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)


def only_own_secret(curve_dir: Path, node_id: int) -> None:
    secrets = sorted(p.name for p in curve_dir.rglob("*.key_secret"))
    assert secrets == [f"node{node_id}.key_secret"], secrets
    assert sorted(p.name for p in curve_dir.glob("*.key")) == ["node1.key", "node2.key", "node3.key"]
    assert [p.name for p in (curve_dir / "clients").glob("*.key")] == ["ops.key"]


def example(repo: Path, name: str) -> dict[str, Any]:
    loaded = tomllib.loads((repo / "conf" / name).read_text())
    assert {"curve_dir", "tls_cert_file", "tls_key_file", "tokens_file"} <= set(loaded["security"])
    return loaded


# ---- the tests -----------------------------------------------------------------------------------
def test_the_three_host_example_runs_secured_with_the_readme_commands(
    repo: Path, readme: str, tmp_path: Path, hosts: dict[int, Path],
    start: Callable[..., HostsCluster],
) -> None:
    three_hosts = example(repo, "cluster-3hosts.toml")
    made = make_security(readme, tmp_path, docker=False)
    for node_id, host in hosts.items():
        install_systemd_host(readme, made, host, node_id)
        etc = host / "etc" / "raftkvd"
        only_own_secret(etc / "curve", node_id)
        for secret in (etc / "curve" / f"node{node_id}.key_secret", etc / "tls" / "node.key"):
            assert secret.stat().st_mode & 0o777 == 0o600, secret
        assert (etc / "tokens").stat().st_mode & 0o777 == 0o640

    cluster = start(three_hosts, made)
    # node N's certificate names 127.0.0.N (10.0.0.N in the example): curl asks for that name
    # and connects to where the node listens
    def url_of(node_id: int) -> tuple[str, list[str]]:
        port = cluster.specs[node_id].http_port
        return (f"https://127.0.0.{node_id}:{port}",
                ["--connect-to", f"127.0.0.{node_id}:{port}:{HOST}:{port}"])

    check_clients(cluster, made, made.staging / "clients" / "ops.key_secret", url_of, via_env=True)


def test_the_docker_example_runs_secured_with_the_readme_commands_and_passes_the_healthcheck(
    repo: Path, readme: str, tmp_path: Path, hosts: dict[int, Path],
    start: Callable[..., HostsCluster],
) -> None:
    docker = example(repo, "cluster-docker.toml")
    mount = PurePosixPath(os.path.commonpath([docker["security"][key] for key in
                                              ("curve_dir", "tls_cert_file", "tokens_file")]))
    made = make_security(readme, tmp_path, docker=True)
    prepare_docker(readme, made)
    for node_id, host in hosts.items():
        # docker-compose.yml: node N's directory, mounted read-only at `mount`
        target = host / relative(str(mount))
        target.parent.mkdir(parents=True)
        target.symlink_to(made.staging / f"node{node_id}", target_is_directory=True)
        only_own_secret(target / "curve", node_id)

    cluster = start(docker, made)
    for node_id in cluster.ids:
        passed = wait_for(f"node {node_id}'s healthcheck to pass",
                          lambda n=node_id: (r := healthcheck(cluster, n)).returncode == 0 and r,
                          HEALTHY_WITHIN_S)
        assert '"status": "healthy"' in passed.stdout

    def url_of(node_id: int) -> tuple[str, list[str]]:
        return f"https://localhost:{cluster.specs[node_id].http_port}", []

    key = cluster.hosts[1] / relative(str(mount)) / "ops.key_secret"  # `docker compose exec node1`
    check_clients(cluster, made, key, url_of, via_env=False)
