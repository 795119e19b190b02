"""The systemd units (systemd/): `systemd-analyze verify` finds nothing to say about an
instance of raftkvd@.service or about raftkvd.target, the hardening keeps an OK exposure
level, the sysusers file makes the user the unit runs as, and the three-host example keeps
its data where the unit may write."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest

UNIT = "raftkvd@.service"
TARGET = "raftkvd.target"
SYSUSERS = "raftkvd.sysusers.conf"
INSTANCE = "raftkvd@1.service"
STATE_ROOT = PurePosixPath("/var/lib")
MAX_EXPOSURE = 4.0
"""`systemd-analyze security` rates raftkvd@.service 3.2 ("OK"); dropping a hardening
setting of weight pushes it past this."""
RUN_TIMEOUT_S = 60.0
_EXPOSURE = re.compile(r"Overall exposure level for \S+: ([0-9.]+) (\w+)")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package systemd): cannot check the units")
    return path


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, in order (a unit file may repeat a key)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def installable_copy(repo: Path, into: Path, unit_text: str | None = None) -> tuple[Path, Path]:
    """raftkvd@1.service and raftkvd.target in `into`, the instance's ExecStart binary
    (not installed on a test machine) replaced by an executable that exists."""
    into.mkdir(parents=True, exist_ok=True)
    text = unit_text if unit_text is not None else (repo / "systemd" / UNIT).read_text()
    exec_start = unit_settings(text)["Service"]["ExecStart"][0]
    binary = exec_start.split()[0]
    stand_in = shutil.which("true")
    assert stand_in is not None
    instance = into / INSTANCE
    instance.write_text(text.replace(f"ExecStart={binary} ", f"ExecStart={stand_in} ", 1))
    target = into / TARGET
    shutil.copy(repo / "systemd" / TARGET, target)
    return instance, target


def verify(*units: Path) -> tuple[int, list[str]]:
    """(exit code, output lines that concern raftkvd units) of `systemd-analyze verify`."""
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", *map(str, units)], capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL,
    )
    output = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in output if "raftkvd" in line]


def test_the_instantiated_unit_and_the_target_pass_systemd_analyze_verify(
    repo: Path, tmp_path: Path
) -> None:
    instance, target = installable_copy(repo, tmp_path)
    code, complaints = verify(instance, target)
    assert complaints == [] and code == 0, "\n".join(complaints)


def test_systemd_analyze_verify_does_report_a_broken_copy_of_the_unit(
    repo: Path, tmp_path: Path
) -> None:
    """The check above can fail: the same run names a misspelt setting."""
    broken = (repo / "systemd" / UNIT).read_text().replace("RestartSec=", "RestartSecs=", 1)
    instance, target = installable_copy(repo, tmp_path, broken)
    _, complaints = verify(instance, target)
    assert any("RestartSecs" in line for line in complaints), complaints


def test_the_unit_is_hardened_to_an_ok_exposure_level(repo: Path, tmp_path: Path) -> None:
    instance, _ = installable_copy(repo, tmp_path)
    result = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(instance)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL,
    )
    if "offline" in result.stderr and ("unrecognized" in result.stderr or "unknown" in result.stderr):
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 250)")
    match = _EXPOSURE.search(result.stdout)
    assert match is not None, result.stdout[-2000:] + result.stderr[-2000:]
    assert float(match.group(1)) <= MAX_EXPOSURE, match.group(0)


def test_the_sysusers_file_creates_the_user_and_group_the_unit_runs_as(
    repo: Path, tmp_path: Path
) -> None:
    sysusers = tool("systemd-sysusers")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = subprocess.run(
        [sysusers, f"--root={root}", str(repo / "systemd" / SYSUSERS)], capture_output=True,
        text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    service = unit_settings((repo / "systemd" / UNIT).read_text())["Service"]
    user, group = service["User"][0], service["Group"][0]
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()}
    assert user in passwd and group in groups
    state_dir = STATE_ROOT / service["StateDirectory"][0]
    assert passwd[user][5] == str(state_dir), "the user's home is the unit's state directory"
    assert passwd[user][6].endswith("nologin")


def test_the_three_host_example_keeps_its_data_where_the_unit_may_write(repo: Path) -> None:
    """ProtectSystem=strict leaves only StateDirectory= writable: every data_dir of the
    example must lie in it, and the unit starts in it and reads the file it is installed as."""
    service = unit_settings((repo / "systemd" / UNIT).read_text())["Service"]
    assert service["ProtectSystem"] == ["strict"]
    state_dir = STATE_ROOT / service["StateDirectory"][0]
    assert service["WorkingDirectory"] == [str(state_dir)]
    example = tomllib.loads((repo / "conf" / "cluster-3hosts.toml").read_text())
    for node in example["node"]:
        assert PurePosixPath(node["data_dir"]).is_relative_to(state_dir), node
    exec_start = service["ExecStart"][0].split()
    assert exec_start[1:3] == ["run", "--config"]
    assert exec_start[3] == "${CONFIGURATION_DIRECTORY}/cluster.toml"
    assert service.get("ConfigurationDirectory") == ["raftkvd"]
    assert exec_start[-2:] == ["--id", "%i"]
    readme = (repo / "README.md").read_text()
    assert exec_start[0] in readme, "the README says where the unit expects raftkvd"


def test_systemctl_reload_sends_sighup_to_the_node(repo: Path) -> None:
    """SIGHUP makes raftkvd re-read its cluster file (SPEC §3); the main pid is the node."""
    service = unit_settings((repo / "systemd" / UNIT).read_text())["Service"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
