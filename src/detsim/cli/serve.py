"""`detsim serve`: one node of the replicated store as an OS process (DESIGN "The replicated
store").

Owns the mapping from the command line and a TOML file to `detsim.kv.NodeConfig`, and the
process around `detsim.kv.serve`: logging to stderr, signals, exit status.

Rules:
- Every NodeConfig setting is a flag or a key of the `--config` TOML file; a TOML key is the
  flag's name without its leading dashes (`request-timeout = 2.5`, tables `[peer]`,
  `[peer-client]`, `[raft-option]`). A flag given on the command line overrides the file's key
  (a repeatable flag replaces the file's whole table). Unknown keys and bad values are errors
  naming the key or flag (exit 2), before anything starts.
- Secrets never travel on the command line, where `ps` shows them to every user: the cluster
  secret comes from `--secret-file` or `DETSIM_CLUSTER_SECRET`, the client password from
  `--requirepass-file` or `DETSIM_REQUIREPASS` (a file wins over the environment). A literal
  (`--secret`, `--requirepass`, or `secret =` in the TOML file) is refused, saying where to put it.
  A secret file's surrounding whitespace (the final newline) is not part of the secret.
- SIGTERM and SIGINT stop the node cleanly (exit 0). A node that stops by itself (bind failure,
  storage fault) exits 1 with the reason logged. `--stop-on-stdin-eof` also stops it when its
  stdin reaches end of file: `detsim up` holds the other end of that pipe, so no node outlives
  its launcher, even one killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tomllib
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import click

from detsim.kv.node import NodeConfig, serve
from detsim.raft.core.config import RaftConfig
from detsim.raft.core.messages import MAX_NODE_ID_BYTES

SECRET_ENV: Final = "DETSIM_CLUSTER_SECRET"
REQUIREPASS_ENV: Final = "DETSIM_REQUIREPASS"
MAX_SECRET_FILE_BYTES: Final = 64 * 1024  # a secret file larger than this is a wrong file
MAX_PEERS: Final = 99  # a cluster has at most 100 nodes, like a simulation
STDIN_READ_BYTES: Final = 4096
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
EXIT_STOPPED_BY_ITSELF: Final = 1

# Options that would put a secret on the command line -> where it belongs instead.
_REFUSED_LITERALS: Final = {
    "--secret": f"--secret-file FILE or the {SECRET_ENV} environment variable",
    "--cluster-secret": f"--secret-file FILE or the {SECRET_ENV} environment variable",
    "--requirepass": f"--requirepass-file FILE or the {REQUIREPASS_ENV} environment variable",
    "--password": f"--requirepass-file FILE or the {REQUIREPASS_ENV} environment variable",
}

# TOML key -> the type its value must have (tables are checked entry by entry).
_SCALAR_KEYS: Final[dict[str, type | tuple[type, ...]]] = {
    "id": str,
    "raft": str,
    "client": str,
    "data": str,
    "join": bool,
    "secret-file": str,
    "requirepass-file": str,
    "request-timeout": (int, float),
    "max-clients": int,
    "tick-interval": (int, float),
    "snapshot-threshold": int,
    "max-data-bytes": int,
    "log-level": str,
    "stop-on-stdin-eof": bool,
}
_TABLE_KEYS: Final = ("peer", "peer-client", "raft-option")

_log = logging.getLogger("detsim.serve")

# NodeConfig's defaults, for the help text and for settings not given.
_DEFAULTS: Final = NodeConfig("defaults", ("127.0.0.1", 1), ("127.0.0.1", 2), {}, "")


class SettingsError(click.UsageError):
    """A bad flag, TOML key or value: exit 2 with a message naming it."""


# --- parsing helpers --------------------------------------------------------------------------


def parse_address(text: str, where: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); SettingsError naming `where` otherwise."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or any(c.isspace() for c in host):
        raise SettingsError(f"{where}: {text!r} is not HOST:PORT")
    port = int(port_text)
    if not 0 < port < 65536:
        raise SettingsError(f"{where}: port {port} is outside 1..65535")
    return host, port


def check_node_id(node_id: str, where: str) -> str:
    size = len(node_id.encode())
    if not 0 < size <= MAX_NODE_ID_BYTES or not node_id.isprintable() or " " in node_id:
        raise SettingsError(
            f"{where}: node id {node_id!r} must be 1..{MAX_NODE_ID_BYTES} bytes of printable "
            "text without spaces"
        )
    return node_id


def parse_pairs(items: Sequence[str], where: str) -> dict[str, str]:
    """`KEY=VALUE` items -> a dict (a repeated key is an error)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"{where}: {item!r} is not KEY=VALUE")
        if key in out:
            raise SettingsError(f"{where}: {key!r} given twice")
        out[key] = value
    return out


def _option_value(text: str) -> Any:
    """A --raft-option value: JSON (numbers, true/false), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_toml(path: str) -> dict[str, Any]:
    """The `--config` file, its keys and value types checked."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise SettingsError(f"--config: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"--config: {path} is not valid TOML: {exc}") from None
    for key, value in data.items():
        _check_toml_key(path, key, value)
    return data


def _check_toml_key(path: str, key: str, value: Any) -> None:
    where = f"{path}: key {key!r}"
    if key in ("secret", "cluster-secret", "requirepass", "password"):
        kind = "requirepass" if key in ("requirepass", "password") else "secret"
        raise SettingsError(f"{where}: secrets are not kept in the config; use {kind}-file")
    if key in _TABLE_KEYS:
        if not isinstance(value, dict):
            raise SettingsError(f"{where} must be a table ([{key}])")
        if key != "raft-option" and not all(isinstance(v, str) for v in value.values()):
            raise SettingsError(f'{where}: every value must be a "HOST:PORT" string')
        return
    expected = _SCALAR_KEYS.get(key)
    if expected is None:
        known = ", ".join(sorted([*_SCALAR_KEYS, *_TABLE_KEYS]))
        raise SettingsError(f"{where} is unknown (known keys: {known})")
    # bool is an int in Python: `max-clients = true` must not pass as 1.
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise SettingsError(f"{where} has a value of the wrong type: {value!r}")


def read_secret(path: str | None, env_name: str, what: str) -> bytes | None:
    """A secret from `path` (if given) or the environment variable; None if neither."""
    if path is None:
        value = os.environ.get(env_name)
        if value is None:
            return None
        if not value.strip():
            raise SettingsError(f"{env_name} is set but empty")
        return value.strip().encode()
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise SettingsError(f"{what}: {path} is over {MAX_SECRET_FILE_BYTES} bytes")
    if not data.strip():
        raise SettingsError(f"{what}: {path} is empty")
    with contextlib.suppress(OSError):
        if os.stat(path).st_mode & 0o077:
            _log.warning("%s %s is readable by other users (chmod 600 it)", what, path)
    return data.strip()


# --- settings -> NodeConfig --------------------------------------------------------------------


def merge(file_settings: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """TOML settings overridden by the flags that were given (None / empty: not given)."""
    merged = dict(file_settings)
    for key, value in flags.items():
        if value is None or value == () or value is False:
            continue
        merged[key] = value
    return merged


def _table(settings: Mapping[str, Any], key: str) -> dict[str, str]:
    value = settings.get(key, {})
    if isinstance(value, tuple):  # from repeated flags
        return parse_pairs(value, f"--{key}")
    return {str(k): v for k, v in value.items()}


def _addresses(settings: Mapping[str, Any], key: str) -> dict[str, tuple[str, int]]:
    out = {}
    for node_id, text in _table(settings, key).items():
        out[check_node_id(node_id, f"--{key}")] = parse_address(text, f"--{key} {node_id}")
    if len(out) > MAX_PEERS:
        raise SettingsError(f"--{key}: {len(out)} peers; a cluster has at most {MAX_PEERS + 1}")
    return out


def _raft_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    raw = settings.get("raft-option", {})
    if isinstance(raw, tuple):
        options = {k: _option_value(v) for k, v in parse_pairs(raw, "--raft-option").items()}
    else:
        options = dict(raw)
    known = set(RaftConfig.__dataclass_fields__) - {"node_id"}
    for key in options:
        if key not in known:
            raise SettingsError(
                f"--raft-option: unknown {key!r} (known: {', '.join(sorted(known))})"
            )
    try:
        RaftConfig(node_id="check", **options).validate()
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"--raft-option: {exc}") from None
    return options


def _required(settings: Mapping[str, Any], key: str) -> Any:
    if key not in settings:
        raise SettingsError(f"--{key} is required (as a flag or in the --config file)")
    return settings[key]


def _positive(settings: Mapping[str, Any], key: str, default: Any) -> Any:
    value = settings.get(key, default)
    if value is not None and not value > 0:
        raise SettingsError(f"--{key} must be > 0, not {value}")
    return value


def node_config(settings: Mapping[str, Any]) -> NodeConfig:
    """The NodeConfig the merged settings describe (SettingsError for anything wrong)."""
    node_id = check_node_id(str(_required(settings, "id")), "--id")
    peers = _addresses(settings, "peer")
    if node_id in peers:
        raise SettingsError(f"--peer: {node_id} is this node's own id")
    raft_addr = parse_address(_required(settings, "raft"), "--raft")
    client_addr = parse_address(_required(settings, "client"), "--client")
    if raft_addr == client_addr:
        raise SettingsError("--raft and --client must be different addresses")
    defaults = _DEFAULTS
    max_clients = _positive(settings, "max-clients", defaults.max_client_connections)
    if max_clients > defaults.max_client_connections:
        raise SettingsError(f"--max-clients is at most {defaults.max_client_connections}")
    return NodeConfig(
        node_id=node_id,
        raft_addr=raft_addr,
        client_addr=client_addr,
        peers=peers,
        data_dir=str(_required(settings, "data")),
        join=bool(settings.get("join", False)),
        secret=read_secret(settings.get("secret-file"), SECRET_ENV, "--secret-file"),
        requirepass=read_secret(
            settings.get("requirepass-file"), REQUIREPASS_ENV, "--requirepass-file"
        ),
        peer_client_addrs=_addresses(settings, "peer-client"),
        request_timeout_s=float(_positive(settings, "request-timeout", defaults.request_timeout_s)),
        max_client_connections=int(max_clients),
        tick_interval_s=float(_positive(settings, "tick-interval", defaults.tick_interval_s)),
        snapshot_threshold_entries=int(
            _positive(settings, "snapshot-threshold", defaults.snapshot_threshold_entries)
        ),
        raft=_raft_options(settings),
        max_data_bytes=_positive(settings, "max-data-bytes", None),
    )


def prepare_data_dir(path: str) -> None:
    """Create the data directory (and parents); ClickException (exit 1) if impossible."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = Path(path) / ".detsim-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise click.ClickException(
            f"cannot use the data directory {path}: {exc.strerror or exc}"
        ) from None


# --- the process -------------------------------------------------------------------------------


async def run(config: NodeConfig, stop_on_stdin_eof: bool) -> int:
    """Serve until SIGTERM/SIGINT (or stdin's EOF): 0; until the node stops by itself: 1."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop(reason: str) -> Callable[[], None]:
        def handler() -> None:
            if not stop.is_set():
                _log.info("node %s: %s: stopping", config.node_id, reason)
            stop.set()

        return handler

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop(signal.Signals(signum).name))
    if stop_on_stdin_eof:
        _watch_stdin(loop, request_stop("stdin closed (the launcher is gone)"))
    node = asyncio.create_task(serve(config), name=f"serve {config.node_id}")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([node, stopper], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if node.done():
        return _stopped_by_itself(config, node)
    node.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await node
    _log.info("node %s: stopped", config.node_id)
    return 0


def _stopped_by_itself(config: NodeConfig, node: asyncio.Task[None]) -> int:
    exc = node.exception() if not node.cancelled() else None
    if isinstance(exc, OSError):
        _log.error("node %s stopped: %s", config.node_id, exc)
    else:
        _log.error("node %s stopped", config.node_id, exc_info=exc)
    return EXIT_STOPPED_BY_ITSELF


def _watch_stdin(loop: asyncio.AbstractEventLoop, on_eof: Callable[[], None]) -> None:
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, STDIN_READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            on_eof()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # serve() both logs and warns about a missing secret; the log line is enough here.
    warnings.filterwarnings("ignore", message=r".*no cluster secret", category=RuntimeWarning)


class _ServeCommand(click.Command):
    """Refuses secrets given literally on the command line before click parses anything."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for arg in args:
            if arg == "--":
                break
            name = arg.split("=", 1)[0]
            if name in _REFUSED_LITERALS:
                raise click.UsageError(
                    f"{name} is refused: a secret on the command line is visible to every user "
                    f"(ps). Use {_REFUSED_LITERALS[name]}.",
                    ctx,
                )
        return super().parse_args(ctx, args)


@click.command("serve", cls=_ServeCommand)
@click.option("--config", "config_file", metavar="FILE.toml", help="Settings (flags override).")
@click.option("--id", "id_", metavar="ID", help="This node's id, e.g. n1.")
@click.option("--raft", metavar="HOST:PORT", help="Address of the Raft port (peers connect).")
@click.option("--client", metavar="HOST:PORT", help="Address of the Redis-protocol port.")
@click.option("--peer", multiple=True, metavar="ID=HOST:PORT", help="An initial peer's Raft port.")
@click.option(
    "--peer-client",
    multiple=True,
    metavar="ID=HOST:PORT",
    help="A peer's client port (followers forward writes there).",
)
@click.option("--data", metavar="DIR", help="Data directory (created if missing).")
@click.option("--join", is_flag=True, default=None, help="Start empty, as a learner to be added.")
@click.option("--secret-file", metavar="FILE", help=f"Cluster secret (or ${SECRET_ENV}).")
@click.option(
    "--requirepass-file", metavar="FILE", help=f"Client password (or ${REQUIREPASS_ENV})."
)
@click.option(
    "--request-timeout",
    type=float,
    metavar="S",
    help=f"Seconds before -TIMEOUT [{_DEFAULTS.request_timeout_s}].",
)
@click.option(
    "--max-clients",
    type=int,
    metavar="N",
    help=f"Client connections [{_DEFAULTS.max_client_connections}].",
)
@click.option(
    "--tick-interval",
    type=float,
    metavar="S",
    help=f"Seconds per Raft tick [{_DEFAULTS.tick_interval_s}].",
)
@click.option(
    "--snapshot-threshold",
    type=int,
    metavar="N",
    help=f"Entries between snapshots [{_DEFAULTS.snapshot_threshold_entries}].",
)
@click.option("--max-data-bytes", type=int, metavar="N", help="The store's size bound.")
@click.option("--raft-option", multiple=True, metavar="KEY=VALUE", help="A Raft core setting.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="Log level on stderr [info].")
@click.option(
    "--stop-on-stdin-eof", is_flag=True, default=None, help="Stop when stdin closes (detsim up)."
)
def command(config_file: str | None, **flags: Any) -> None:
    """Run one node of the replicated store until SIGTERM or Ctrl-C.

    \b
    Example (one of three nodes):
      detsim serve --id n1 --raft 127.0.0.1:7001 --client 127.0.0.1:6379 \\
        --peer n2=127.0.0.1:7002 --peer n3=127.0.0.1:7003 \\
        --peer-client n2=127.0.0.1:6380 --peer-client n3=127.0.0.1:6381 \\
        --data /var/lib/detsim/n1 --secret-file /etc/detsim/cluster.secret
    """
    flags["id"] = flags.pop("id_")
    file_settings = load_toml(config_file) if config_file else {}
    settings = merge(file_settings, {key.replace("_", "-"): v for key, v in flags.items()})
    _setup_logging(str(settings.get("log-level", "info")))
    config = node_config(settings)
    prepare_data_dir(config.data_dir)
    _log.info(
        "node %s: raft %s:%d, client %s:%d, peers %s, data %s%s",
        config.node_id,
        *config.raft_addr,
        *config.client_addr,
        ",".join(sorted(config.peers)) or "none",
        config.data_dir,
        " (joining as a learner)" if config.join else "",
    )
    code = asyncio.run(run(config, bool(settings.get("stop-on-stdin-eof", False))))
    sys.exit(code)
