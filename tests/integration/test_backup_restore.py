"""Backup and restore, and disaster recovery, with real processes (issue: operations).

A backup taken while clients write holds every write acknowledged before it began and restores
into a new cluster; damaged files are refused with nothing written; a cluster that lost two of
three nodes for good is recovered from the survivor, and a new node joins it and catches up.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cluster import RAFTCTL, RAFTKVD, ProcCluster, load_keys, run_cli, wait_for

from raftctl import Client

PRELOADED = 20_000
VALUE = "v" * 100
WRITERS = 4
WRITER_MAX_WRITES = 5_000
WRITER_MAX_S = 60.0


class Writers:
    """Clients that write their own keys until stopped, noting when each write was acked."""

    def __init__(self, cluster: ProcCluster) -> None:
        self.acked: dict[str, float] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(cluster, n)) for n in range(WRITERS)]

    def _write(self, cluster: ProcCluster, n: int) -> None:
        deadline = time.monotonic() + WRITER_MAX_S
        with cluster.client(timeout=10.0) as client:
            for i in range(WRITER_MAX_WRITES):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                key = f"w{n}-{i:05d}"
                try:
                    client.put(key, f"{key}-value")
                except Exception as exc:  # noqa: BLE001 - reported by the test
                    self.errors.append(f"{key}: {exc}")
                    return
                self.acked[key] = time.monotonic()

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        try:
            wait_for("the writers to get going", lambda: len(self.acked) >= 100 or bool(self.errors), 20.0)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30.0)


def _restore_all(cluster: ProcCluster, backup: Path) -> None:
    for node_id in cluster.ids:
        result = run_cli(RAFTKVD, "restore", str(backup), "--config", str(cluster.config_path),
                         "--id", str(node_id))
        assert result.returncode == 0, result.stderr
        assert f"restored node {node_id}" in result.stdout


def test_a_backup_taken_under_writes_restores_every_acknowledged_write_into_a_new_cluster(
        make_cluster: Callable[..., ProcCluster], tmp_path: Path) -> None:
    source = make_cluster(3)
    source.start_all()
    load_keys(source, "k", PRELOADED, VALUE)
    backup = tmp_path / "store.bk"
    with Writers(source) as writers:
        began = time.monotonic()
        saved = run_cli(RAFTCTL, "--config", str(source.config_path), "-o", "json", "snapshot", "save",
                        str(backup))
        ended = time.monotonic()
    assert saved.returncode == 0, saved.stderr
    assert not writers.errors, writers.errors[:3]
    report = json.loads(saved.stdout)
    before = sorted(k for k, at in writers.acked.items() if at < began)
    during = [k for k, at in writers.acked.items() if began <= at <= ended]
    assert before and during, "the writers did not overlap the backup"
    assert report["keys"] >= PRELOADED + len(before)
    assert report["bytes"] == backup.stat().st_size and len(report["sha256"]) == 64

    status = run_cli(RAFTCTL, "-o", "json", "snapshot", "status", str(backup))
    assert status.returncode == 0, status.stderr
    described = json.loads(status.stdout)
    assert described["checksum"] == "ok"
    assert (described["index"], described["keys"]) == (report["index"], report["keys"])
    assert described["voters"] == [1, 2, 3] and described["sha256"] == report["sha256"]

    target = make_cluster(3)
    _restore_all(target, backup)
    target.start_all()
    with target.client() as client:
        for key in before:
            assert client.get(key) == f"{key}-value"
        for i in range(0, PRELOADED, 997):
            assert client.get(f"k{i:07d}") == VALUE
        assert len(client.list("k")) == PRELOADED
        revision = client.put("after-restore", "yes")
    assert revision == described["revision"] + 1  # the store's numbering goes on
    index = max(target.status(n)["applied"] for n in target.ids)  # type: ignore[index]
    assert index > report["index"]  # and so does the log, from the backup's index
    for node_id in target.ids:
        target.wait_applied(node_id, index)
    hashes = {target.ok_reply(n, "hash")["hash"] for n in target.ids}  # type: ignore[index]
    assert len(hashes) == 1


def test_damaged_or_truncated_backups_and_used_data_dirs_are_refused_and_nothing_is_written(
        make_cluster: Callable[..., ProcCluster], tmp_path: Path) -> None:
    source = make_cluster(1)
    source.start_all()
    with source.client() as client:
        for i in range(300):
            client.put(f"key{i}", VALUE)
    backup = tmp_path / "store.bk"
    saved = run_cli(RAFTCTL, "--config", str(source.config_path), "snapshot", "save", str(backup))
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.startswith(f"saved {backup}: index ") and "300 keys" in saved.stdout
    good = backup.read_bytes()
    target = make_cluster(1)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    for name, damaged in (("flipped", bytes(flipped)), ("truncated", good[: len(good) // 2]),
                          ("cut-short", good[:-3])):
        path = tmp_path / f"{name}.bk"
        path.write_bytes(damaged)
        status = run_cli(RAFTCTL, "snapshot", "status", str(path))
        assert status.returncode == 1 and len(status.stderr.strip().splitlines()) == 1, status
        assert "damaged" in status.stderr or "truncated" in status.stderr or "cut short" in status.stderr
        restored = run_cli(RAFTKVD, "restore", str(path), "--config", str(target.config_path), "--id", "1")
        assert restored.returncode == 2 and restored.stderr.startswith("raftkvd: restore: "), restored
        assert len(restored.stderr.strip().splitlines()) == 1
        assert not target.specs[1].data_dir.exists()
        assert [p.name for p in target.root.iterdir() if p.name.startswith(".")] == []
    data_dir = target.specs[1].data_dir
    data_dir.mkdir()
    (data_dir / "keep-me").write_text("x")
    restored = run_cli(RAFTKVD, "restore", str(backup), "--config", str(target.config_path), "--id", "1")
    assert restored.returncode == 2 and "not empty" in restored.stderr
    assert [p.name for p in data_dir.iterdir()] == ["keep-me"]
    missing = run_cli(RAFTCTL, "snapshot", "status", str(tmp_path / "nope.bk"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    nowhere = run_cli(RAFTCTL, "--config", str(source.config_path), "snapshot", "save",
                      str(tmp_path / "no-dir" / "x.bk"))
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr


def test_recover_a_cluster_that_lost_two_of_three_nodes_then_a_new_node_joins_and_catches_up(
        make_cluster: Callable[..., ProcCluster]) -> None:
    cluster = make_cluster(3)
    leader = cluster.start_all()
    with cluster.client() as client:
        index = 0
        for i in range(500):
            index = client.put(f"key{i}", f"value{i}")
    survivor = next(n for n in cluster.ids if n != leader)
    cluster.wait_applied(survivor, index)
    for lost in cluster.ids:
        if lost != survivor:
            cluster.kill(lost)  # gone for good
    assert cluster.stop(survivor) == 0

    config = ["--config", str(cluster.config_path), "--id", str(survivor)]
    refused = run_cli(RAFTKVD, "recover", *config)
    assert refused.returncode == 2 and "--force-new-cluster" in refused.stderr
    recovered = run_cli(RAFTKVD, "recover", *config, "--force-new-cluster")
    assert recovered.returncode == 0, recovered.stderr
    assert f"node {survivor} is now the only member" in recovered.stdout

    cluster.start(survivor)
    assert cluster.wait_for_leader() == survivor
    again = run_cli(RAFTKVD, "recover", *config, "--force-new-cluster")
    assert again.returncode == 2 and "seems to be running" in again.stderr
    with cluster.client(cluster.endpoints([survivor])) as client:
        assert all(client.get(f"key{i}") == f"value{i}" for i in range(500))
        client.put("after-recovery", "yes")
        newcomer = cluster.add_spec()
        added = run_cli(RAFTCTL, "-e", cluster.specs[survivor].endpoint, "member", "add", str(newcomer.id),
                        newcomer.raft, newcomer.client, f"127.0.0.1:{newcomer.http_port}")
        assert added.returncode == 0, added.stderr
        cluster.start(newcomer.id, join=True)

        def caught_up() -> bool | None:
            status = cluster.status(newcomer.id)
            return bool(status and newcomer.id in status["voters"]
                        and status["applied"] >= index + 2) or None

        wait_for("the new node to become a voter and catch up", caught_up, 30.0)
        with Client([newcomer.endpoint]) as direct:
            assert direct.get("key499", consistency="serializable") == "value499"
            assert direct.get("after-recovery", consistency="serializable") == "yes"
        client.put("with-two-voters", "yes")
