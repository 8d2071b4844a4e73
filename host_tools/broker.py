"""A local MQTT broker for demos and tests: mosquitto when installed, amqtt (pip) otherwise.

    with start_broker() as broker:          # free port on 127.0.0.1
        run_tracker(server=broker.url)      # "mqtt://127.0.0.1:40123"

The broker runs as a child process with a generated config and its own log file. It is
ready when it answers an MQTT CONNECT with a CONNACK (a listening socket alone is not
enough: amqtt accepts TCP before its session handler is up). Children are stopped by
`stop()`, by the context manager, at interpreter exit, and on Linux also when the process
that started them dies (PR_SET_PDEATHSIG), so a crashed test run leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

__all__ = [
    "KINDS",
    "Broker",
    "BrokerError",
    "amqtt_available",
    "available_kinds",
    "connect_url",
    "find_mosquitto",
    "port_is_open",
    "start_broker",
]

KINDS = ("mosquitto", "amqtt")
DEFAULT_MQTT_PORT = 1883
READY_TIMEOUT_S = 20.0  # amqtt imports pydantic & co. on start; a loaded CI box is slow
STOP_TIMEOUT_S = 5.0
# Debian installs mosquitto in /usr/sbin, which is not on a normal user's PATH.
_MOSQUITTO_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")
# MQTT 3.1.1 CONNACK: no session present, return code 0 (connection accepted).
_CONNACK_OK = b"\x20\x02\x00\x00"


class BrokerError(RuntimeError):
    """The broker could not be found, started or reached. The message names the log file."""


def find_mosquitto() -> str | None:
    """Path of the mosquitto executable (PATH first, then the usual sbin folders)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for folder in _MOSQUITTO_DIRS:
        candidate = Path(folder) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def amqtt_available() -> bool:
    """True if the amqtt broker can be run with this interpreter."""
    return importlib.util.find_spec("amqtt") is not None


def available_kinds() -> list[str]:
    """Broker kinds that can be started here, preferred first."""
    kinds = []
    if find_mosquitto():
        kinds.append("mosquitto")
    if amqtt_available():
        kinds.append("amqtt")
    return kinds


def connect_url(url: str) -> tuple[str, int]:
    """Split "mqtt://HOST[:PORT]" into (host, port); the port defaults to 1883.

    Raises ValueError naming the URL and what is wrong with it.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:  # a non-numeric or out-of-range port
        raise ValueError(f"bad broker URL {url!r}: {exc}") from None
    if parts.scheme != "mqtt":
        raise ValueError(f"bad broker URL {url!r}: expected mqtt://HOST:PORT")
    if not parts.hostname:
        raise ValueError(f"bad broker URL {url!r}: no host name")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"bad broker URL {url!r}: credentials are not supported in the URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"bad broker URL {url!r}: unexpected text after HOST:PORT")
    if port == 0:
        raise ValueError(f"bad broker URL {url!r}: port 0 is not a port one can connect to")
    return parts.hostname, port if port is not None else DEFAULT_MQTT_PORT


def _format_url(host: str, port: int) -> str:
    return f"mqtt://[{host}]:{port}" if ":" in host else f"mqtt://{host}:{port}"


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _connect_packet(client_id: bytes) -> bytes:
    body = (
        b"\x00\x04MQTT\x04\x02\x00\x0a"  # protocol name, level 4, clean session, keepalive
        + len(client_id).to_bytes(2, "big")
        + client_id
    )
    return bytes([0x10, len(body)]) + body


def _mqtt_handshake(host: str, port: int, timeout_s: float) -> bool:
    """True if an MQTT CONNECT on host:port is answered with an accepting CONNACK."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(_connect_packet(b"albatross-probe-%d" % os.getpid()))
            reply = b""
            while len(reply) < 4:
                chunk = sock.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            if reply != _CONNACK_OK:
                return False
            sock.sendall(b"\xe0\x00")  # DISCONNECT, so no will and no "lost client" noise
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """preexec_fn: have Linux SIGTERM the child when the starting thread exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _mosquitto_config(host: str, port: int) -> str:
    lines = [
        "# generated by albatross (host_tools/broker.py)",
        f"listener {port} {host}",
        "allow_anonymous true",
        "persistence false",
        # Logs go to stderr, which is redirected to our log file: no file permission trouble
        # when mosquitto drops privileges.
        "log_dest stderr",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        # Connects, disconnects, lost clients and errors; 'all' adds every PINGREQ/PUBLISH.
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    # Run as root, mosquitto would switch to user "mosquitto"; stay as whoever we are.
    try:
        lines.append(f"user {pwd.getpwuid(os.getuid()).pw_name}")
    except KeyError:
        pass
    return "\n".join(lines) + "\n"


def _amqtt_config(host: str, port: int) -> str:
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "timeout_disconnect_delay": 0,
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }
    return json.dumps(config, indent=2) + "\n"


class Broker:
    """A running broker child process. Use `start_broker()` to make one."""

    def __init__(
        self,
        kind: str,
        host: str,
        port: int,
        process: subprocess.Popen[bytes],
        log_path: Path,
        config_path: Path,
        temp_dir: Path | None = None,
    ) -> None:
        self.kind = kind
        self.host = host
        self.port = port
        self.log_path = log_path
        self.config_path = config_path
        self.process = process
        # Backstop for brokers nobody stopped: weakref.finalize runs at interpreter exit
        # (through atexit) or when the Broker is garbage collected, whichever comes first.
        self._finalizer = weakref.finalize(self, _terminate, process, temp_dir)

    @property
    def url(self) -> str:
        """The broker address as mqtt://HOST:PORT, the form `connect_url()` accepts."""
        return _format_url(self.host, self.port)

    @property
    def running(self) -> bool:
        return self._finalizer.alive and self.process.poll() is None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after a grace period). Idempotent.

        When `start_broker()` chose a temporary log folder, it is removed here.
        """
        self._finalizer()  # runs _terminate at most once, thread-safely

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Broker {self.kind} {self.url} {state} log={self.log_path}>"


def _terminate(process: subprocess.Popen[bytes], temp_dir: Path | None) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _command(kind: str, config_path: Path) -> list[str]:
    if kind == "mosquitto":
        exe = find_mosquitto()
        if exe is None:
            raise BrokerError(
                "mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)"
            )
        return [exe, "-c", str(config_path)]
    if not amqtt_available():
        raise BrokerError(f"amqtt is not installed for {sys.executable} (pip install amqtt)")
    # This file is the child's entry point (see _amqtt_child); -P keeps host_tools/ itself
    # off sys.path so none of its modules can shadow a standard one.
    return [sys.executable, "-P", __file__, "--amqtt-child", str(config_path)]


def _choose_kind(prefer: str) -> str:
    if prefer in KINDS:
        return prefer
    if prefer != "auto":
        raise ValueError(f"unknown broker kind {prefer!r}: choose auto, {', '.join(KINDS)}")
    kinds = available_kinds()
    if not kinds:
        raise BrokerError("no MQTT broker available: install mosquitto, or amqtt with pip")
    return kinds[0]


class _PortTaken(BrokerError):
    pass


def start_broker(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    log_dir: Path | None = None,
    prefer: str = "auto",
) -> Broker:
    """Start an MQTT 3.1.1 broker on host:port with anonymous access and no persistence.

    port 0 picks a free port. prefer is "auto" (mosquitto if installed, else amqtt),
    "mosquitto" or "amqtt". Logs go to `<log_dir>/<kind>-<port>.log`; without log_dir a
    temporary folder is used, removed by `stop()` (kept if the start fails, so the log named
    in the error can be read). Returns once the broker accepts an MQTT CONNECT; raises
    BrokerError naming the log file if it does not in time.
    """
    kind = _choose_kind(prefer)
    _command(kind, Path("-"))  # raises BrokerError now if the broker is not installed
    temp_dir = None
    if log_dir is None:
        temp_dir = Path(tempfile.mkdtemp(prefix="albatross-broker-"))
        log_dir = temp_dir
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)

    # A free port can be taken by someone else between our probe and the broker's bind;
    # when we picked it, try another one.
    attempts = 3 if port == 0 else 1
    for attempt in range(1, attempts + 1):
        try:
            return _launch(kind, host, port or _free_port(host), log_dir, temp_dir)
        except _PortTaken as exc:
            if attempt == attempts:
                raise BrokerError(str(exc)) from None
    raise AssertionError("unreachable")


def _launch(kind: str, host: str, port: int, log_dir: Path, temp_dir: Path | None) -> Broker:
    config_path = log_dir / f"{kind}-{port}.conf"
    log_path = log_dir / f"{kind}-{port}.log"
    if kind == "mosquitto":
        config_path.write_text(_mosquitto_config(host, port))
    else:
        config_path.write_text(_amqtt_config(host, port))
    # PR_SET_PDEATHSIG fires when the starting *thread* exits, so only use it from main.
    die_with_parent = sys.platform == "linux" and threading.current_thread() is (
        threading.main_thread()
    )
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            _command(kind, config_path),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _mqtt_handshake(host, port, timeout_s=1.0):
        if process.poll() is not None:
            tail = _log_tail(log_path)
            message = (
                f"{kind} exited with status {process.returncode} while starting on "
                f"{host}:{port}; see {log_path}\n{tail}"
            )
            raise (_PortTaken if "in use" in tail.lower() else BrokerError)(message)
        if time.monotonic() > deadline:
            _terminate(process, None)
            raise BrokerError(
                f"{kind} did not answer MQTT CONNECT on {host}:{port} within "
                f"{READY_TIMEOUT_S:.0f} s; see {log_path}\n{_log_tail(log_path)}"
            )
        time.sleep(0.05)
    return Broker(kind, host, port, process, log_path, config_path, temp_dir)


def port_is_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _amqtt_child(config_path: str) -> int:
    """Run amqtt's broker in this (child) process, with two amqtt 0.12.1 faults fixed.

    - On every CONNECT, amqtt sends the new client the retained messages matching *any*
      client's subscriptions, so e.g. a monitor would get other devices' status messages it
      never subscribed to. We only let a session receive retained messages for its own filters.
    - amqtt's own script keeps running when the listener cannot bind; we exit with status 1.
    """
    import asyncio
    import logging

    from amqtt.broker import Broker as AmqttBroker
    from amqtt.errors import BrokerError as AmqttBrokerError

    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("transitions").setLevel(logging.WARNING)

    publish_retained = getattr(AmqttBroker, "_publish_retained_messages_for_subscription", None)
    if publish_retained is not None:

        async def publish_retained_if_subscribed(
            self: AmqttBroker, subscription: tuple[str, int], session: object
        ) -> None:
            subscribers = self._subscriptions.get(subscription[0], ())
            client_id = getattr(session, "client_id", None)
            if any(sub.client_id == client_id for sub, _qos in subscribers):
                await publish_retained(self, subscription, session)

        AmqttBroker._publish_retained_messages_for_subscription = publish_retained_if_subscribed

    config = json.loads(Path(config_path).read_text())

    async def serve() -> None:
        broker = AmqttBroker(config)
        await broker.start()
        await asyncio.Event().wait()  # until SIGTERM

    try:
        asyncio.run(serve())
    except AmqttBrokerError as exc:
        print(f"amqtt: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--amqtt-child":
        sys.exit(_amqtt_child(sys.argv[2]))
    sys.exit("usage: broker.py --amqtt-child CONFIG  (an internal entry point of albatross)")
