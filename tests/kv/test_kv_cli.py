"""`detsim serve` and `detsim up` as a user runs them: settings from flags and TOML with clear
errors, secrets never on the command line, a real node stopped by SIGTERM/SIGINT (exit 0) that
keeps its data, and a real `detsim up` cluster: ready line, secret file 0600, no orphan when
the launcher is SIGKILLed, data and secret reused at the next start, Ctrl-C stops it all."""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from kv_processes import free_ports

from detsim.cli import main
from detsim.cli import serve as serve_cli
from detsim.kv.cluster import RAFT_PORT_OFFSET, SECRET_FILE

PROCESS_TIMEOUT_S = 60.0
DETSIM = [sys.executable, "-c", "import sys; from detsim.cli import main; sys.exit(main())"]


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def serve_args(tmp_path: Path, *extra: str) -> list[str]:
    raft, client = free_ports(2)
    return [
        "serve",
        "--id",
        "n1",
        "--raft",
        f"127.0.0.1:{raft}",
        "--client",
        f"127.0.0.1:{client}",
        "--data",
        str(tmp_path / "n1"),
        *extra,
    ]


# --- settings errors: exit 2 before anything starts, naming what is wrong -------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--secret", "hunter2"], "--secret-file FILE or the DETSIM_CLUSTER_SECRET"),
        (["--requirepass=hunter2"], "--requirepass-file FILE or the DETSIM_REQUIREPASS"),
        (["--raft", "127.0.0.1"], "--raft: '127.0.0.1' is not HOST:PORT"),
        (["--client", "127.0.0.1:70000"], "--client: port 70000 is outside 1..65535"),
        (["--peer", "n2"], "--peer: 'n2' is not KEY=VALUE"),
        (["--peer", "n1=127.0.0.1:9"], "--peer: n1 is this node's own id"),
        (["--peer", "n2=localhost"], "--peer n2: 'localhost' is not HOST:PORT"),
        (["--raft-option", "bogus=1"], "--raft-option: unknown 'bogus'"),
        (["--raft-option", "election_ticks=1"], "heartbeat_ticks < election_ticks"),
        (["--max-clients", "0"], "--max-clients must be > 0"),
        (["--max-clients", "10001"], "--max-clients is at most 10000"),
        (["--tick-interval", "-1"], "--tick-interval must be > 0"),
        (["--secret-file", "/nonexistent/secret"], "--secret-file: cannot read"),
        (["--config", "/nonexistent/node.toml"], "--config: cannot read"),
    ],
)
def test_bad_flags_are_refused_with_a_message(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    code, output = invoke(*serve_args(tmp_path), *extra)
    assert code == 2, output
    assert message in output


def test_a_missing_setting_is_named(tmp_path: Path) -> None:
    code, output = invoke("serve", "--id", "n1", "--raft", "127.0.0.1:7001")
    assert code == 2
    assert "--client is required (as a flag or in the --config file)" in output


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("id = n1\n", "is not valid TOML"),
        ("idd = 'n1'\n", "key 'idd' is unknown"),
        ("secret = 'hunter2'\n", "secrets are not kept in the config; use secret-file"),
        ("requirepass = 'x'\n", "use requirepass-file"),
        ("max-clients = 'many'\n", "key 'max-clients' has a value of the wrong type"),
        ("join = 1\n", "key 'join' has a value of the wrong type"),
        ("max-clients = true\n", "key 'max-clients' has a value of the wrong type"),
        ("peer = 'n2=127.0.0.1:7002'\n", "key 'peer' must be a table"),
        ("[peer]\nn2 = 7002\n", 'every value must be a "HOST:PORT" string'),
    ],
)
def test_bad_toml_is_refused_with_a_message(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "node.toml"
    config.write_text(toml)
    code, output = invoke(*serve_args(tmp_path), "--config", str(config))
    assert code == 2, output
    assert message in output


def test_empty_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("\n")
    code, output = invoke(*serve_args(tmp_path), "--secret-file", str(tmp_path / "secret"))
    assert code == 2
    assert "is empty" in output


def test_a_data_dir_that_cannot_be_created_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    args = serve_args(tmp_path)
    args[args.index("--data") + 1] = str(tmp_path / "file" / "n1")
    code, output = invoke(*args)
    assert code == 1
    assert f"cannot use the data directory {tmp_path / 'file' / 'n1'}" in output


def test_flags_override_the_toml_file_and_secrets_come_from_files_or_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret").write_text("file-secret\n")
    (tmp_path / "pass").write_text("file-pass\n")
    config = tmp_path / "node.toml"
    config.write_text(
        "id = 'n1'\nraft = '127.0.0.1:7001'\nclient = '127.0.0.1:6379'\n"
        f"data = '{tmp_path}/d'\nrequest-timeout = 2.5\ntick-interval = 0.05\njoin = true\n"
        f"secret-file = '{tmp_path}/secret'\n"
        "[peer]\nn2 = '127.0.0.1:7002'\nn3 = '[::1]:7003'\n"
        "[peer-client]\nn2 = '127.0.0.1:6380'\n"
        "[raft-option]\nelection_ticks = 20\n"
    )
    monkeypatch.setenv(serve_cli.REQUIREPASS_ENV, "env-pass")
    monkeypatch.setenv(serve_cli.SECRET_ENV, "env-secret")
    flags = {"client": "127.0.0.1:7777", "peer": ("n9=10.0.0.9:7009",), "max-clients": 5}
    config_from = serve_cli.node_config(serve_cli.merge(serve_cli.load_toml(str(config)), flags))
    assert config_from.client_addr == ("127.0.0.1", 7777)  # the flag wins
    assert config_from.raft_addr == ("127.0.0.1", 7001)  # the file's
    assert dict(config_from.peers) == {"n9": ("10.0.0.9", 7009)}  # the flag's whole table
    assert dict(config_from.peer_client_addrs) == {"n2": ("127.0.0.1", 6380)}
    assert config_from.request_timeout_s == 2.5 and config_from.tick_interval_s == 0.05
    assert config_from.max_client_connections == 5 and config_from.join is True
    assert dict(config_from.raft) == {"election_ticks": 20}
    assert config_from.secret == b"file-secret"  # a file wins over the environment
    assert config_from.requirepass == b"env-pass"
    file_pass = {"requirepass-file": str(tmp_path / "pass")}
    with_file = serve_cli.node_config(serve_cli.merge(serve_cli.load_toml(str(config)), file_pass))
    assert with_file.requirepass == b"file-pass"
    monkeypatch.delenv(serve_cli.REQUIREPASS_ENV)
    settings = serve_cli.merge(serve_cli.load_toml(str(config)), {})
    del settings["secret-file"]
    from_env = serve_cli.node_config(settings)
    assert from_env.secret == b"env-secret" and from_env.requirepass is None
    v6 = serve_cli.node_config(serve_cli.merge(settings, {}))
    assert v6.peers["n3"] == ("::1", 7003)


def test_up_refuses_a_bad_layout(tmp_path: Path) -> None:
    code, output = invoke("up", "--nodes", "101", "--data", str(tmp_path))
    assert code == 2 and "101" in output
    (tmp_path / "cluster.json").write_text('{"nodes": 3, "base_port": 7379}\n')
    code, output = invoke("up", "--nodes", "5", "--data", str(tmp_path))
    assert code == 2
    assert "holds a cluster of 3 nodes on base port 7379" in output


# --- real processes -----------------------------------------------------------------------


@contextlib.contextmanager
def process(args: list[str], **kwargs: object) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, text=True, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(PROCESS_TIMEOUT_S)


def wait_for(predicate: object, what: str, timeout_s: float = PROCESS_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if predicate():  # type: ignore[operator]
                return
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)


def test_serve_stops_cleanly_on_sigterm_and_sigint_and_keeps_its_data(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    raft, client = free_ports(2)
    config.write_text(
        f"id = 'solo'\nraft = '127.0.0.1:{raft}'\nclient = '127.0.0.1:{client}'\n"
        f"data = '{tmp_path}/data'\n"
    )
    (tmp_path / "secret").write_text("s3cret\n")
    os.chmod(tmp_path / "secret", 0o600)
    args = [*DETSIM, "serve", "--config", str(config), "--secret-file", str(tmp_path / "secret")]
    conn = redis.Redis(port=client, socket_timeout=10)
    for signum, key_was_written in ((signal.SIGTERM, False), (signal.SIGINT, True)):
        with process(args, stderr=subprocess.PIPE) as node:
            if key_was_written:
                wait_for(lambda: conn.get("k") == b"v", "the value written before the restart")
            else:
                wait_for(lambda: conn.set("k", "v"), "a one-node cluster accepting writes")
            node.send_signal(signum)
            code = node.wait(PROCESS_TIMEOUT_S)
            assert node.stderr is not None
            log = node.stderr.read()
        assert code == 0, log
        assert f"node solo: {signal.Signals(signum).name}: stopping" in log
        assert "node solo: stopped" in log
    conn.close()


def test_serve_exits_1_when_its_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = serve_args(tmp_path)
        args[args.index("--client") + 1] = f"127.0.0.1:{port}"
        with process([*DETSIM, *args], stderr=subprocess.PIPE) as node:
            code = node.wait(PROCESS_TIMEOUT_S)
            assert node.stderr is not None
            log = node.stderr.read()
    assert code == 1
    assert "node n1 stopped" in log and "address already in use" in log.lower()


def free_base_port(count: int) -> int:
    """A base port whose client and Raft ranges are free now (tried at random)."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20_000, 40_000)
        ports = [base + i for i in range(count)] + [
            base + RAFT_PORT_OFFSET + i for i in range(count)
        ]
        if all(port_is_free(p) for p in ports):
            return base
    raise AssertionError("no free port range found")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Lines:
    """A process's stdout lines, read by a thread, so waiting for one has a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in stdout], daemon=True).start()

    def until(self, prefix: str, timeout_s: float = PROCESS_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line {prefix!r} in {timeout_s} s: {self.seen}") from None
            self.seen.append(line)
            if line.startswith(prefix):
                return line


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_up_runs_a_cluster_leaves_no_orphan_and_restarts_on_its_data(tmp_path: Path) -> None:
    base = free_base_port(3)
    args = [*DETSIM, "up", "--nodes", "3", "--base-port", str(base), "--data", str(tmp_path)]
    with process(args, stdout=subprocess.PIPE) as launcher:
        lines = Lines(launcher)
        assert "new cluster secret" in lines.until("detsim up: 3 nodes")
        assert lines.until("ready: ") == f"ready: redis-cli -p {base}\n"
        assert any(f"client 127.0.0.1:{base + 2}" in line for line in lines.seen)
        assert redis.Redis(port=base + 1, socket_timeout=10).set("kept", "yes") is True
        nodes = children_of(launcher.pid)
        assert len(nodes) == 3
        launcher.kill()  # SIGKILL: no chance to stop its nodes itself
        launcher.wait(PROCESS_TIMEOUT_S)
        wait_for(lambda: not any(alive(pid) for pid in nodes), "the nodes stop by themselves")
    secret = tmp_path / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    secret_text = secret.read_text()
    assert len(secret_text.strip()) == 64

    # Restarts: the layout comes from DIR (no --base-port). A terminal's Ctrl-C signals the
    # whole foreground process group (the launcher has its own session here, as a shell's job
    # would); SIGTERM reaches the launcher alone. Both stop every node, exit 0.
    restart = [*args[:-4], "--data", str(tmp_path)]
    for stop in ("ctrl-c", "sigterm"):
        with process(restart, stdout=subprocess.PIPE, start_new_session=True) as launcher:
            lines = Lines(launcher)
            assert "existing data and secret" in lines.until("detsim up: 3 nodes")
            lines.until("ready: ")
            assert redis.Redis(port=base + 2, socket_timeout=10).get("kept") == b"yes"
            nodes = children_of(launcher.pid)
            if stop == "ctrl-c":
                os.killpg(launcher.pid, signal.SIGINT)
            else:
                launcher.send_signal(signal.SIGTERM)
            assert launcher.wait(PROCESS_TIMEOUT_S) == 0
            lines.until("detsim up: stopped")
            assert not any(alive(pid) for pid in nodes)
    assert secret.read_text() == secret_text
