"""`albatross`: the command table. Each command parses its arguments and calls library code;
expected failures print one line on stderr and exit non-zero (2), tracebacks are for bugs."""

from __future__ import annotations

import argparse
import getpass
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from host_tools.errors import EXPECTED_ERRORS


def _vboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", help="mqtt://HOST:PORT the firmware reports to")
    p.add_argument("--device-id", help="device id (default: derived from the board's uid)")
    p.add_argument("--interval", type=int, help="sampling/report interval in seconds")
    p.add_argument("--temperature", type=float, help="initial simulated temperature, °C")
    p.add_argument("--humidity", type=float, help="initial simulated humidity, %%RH")
    p.add_argument("--battery", type=float, help="initial simulated battery voltage, V")
    p.add_argument(
        "--heap",
        help="MicroPython heap, e.g. 160k, or a board whose module's heap to take, e.g. "
        "esp32_generic_sim7600 (default: the --board's, from its board.json)",
    )
    p.add_argument(
        "--runtime",
        choices=("esp32", "esp32-frozen", "unix64"),
        help="esp32: the 32-bit ESP32-faithful MicroPython (default); esp32-frozen: the same "
        "with the app frozen in; unix64: the 64-bit PyPI build",
    )
    p.add_argument("--image", type=Path, help="flash image to boot and keep (created if missing)")
    p.add_argument(
        "--refresh-firmware",
        action="store_true",
        help="with --image: replace firmware files in it, keeping config and data",
    )
    p.add_argument("--board", default="unix_sim", help="board folder under boards/")
    p.add_argument(
        "--modem",
        default="board",
        help="simulated modem: sim7600 | a7670 | bg96 | none (host TCP); default: the board's",
    )
    p.add_argument(
        "--gnss",
        default="board",
        choices=("board", "uart", "modem", "none"),
        help="where the firmware gets positions: a NMEA receiver on a UART, the modem's GNSS, "
        "none; default: the board's (board.json gnss)",
    )
    p.add_argument(
        "--route",
        type=Path,
        help="GPX file or NMEA log the simulated asset follows "
        "(default: host_tools/vboard/gnss/routes/paris-drive.gpx)",
    )
    p.add_argument("--name", help="bench name for `albatross bench` (default: device id)")
    p.add_argument("--workdir", type=Path, help="where logs and sockets go")
    p.add_argument(
        "--usb-port",
        type=int,
        default=0,
        help="TCP port of the board's USB port, served as rfc2217:// (esptool, mpremote); "
        "default: any free port; -1: none",
    )


def _port_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--port",
        required=True,
        help="the tracker's serial console: /dev/ttyUSB0, a vboard's pty, socket://HOST:PORT, "
        "rfc2217://HOST:PORT",
    )
    p.add_argument("--baud", type=int, default=115200, help="default: %(default)s")


def _make_vboard(args: argparse.Namespace, echo: Callable[[bytes], None] | None):
    from host_tools.vboard.runner import VirtualBoard, config_overrides, parse_heap

    config = config_overrides(broker=args.broker, device_id=args.device_id, interval=args.interval)
    return VirtualBoard(
        name=args.name or args.device_id or "vboard",
        workdir=args.workdir,
        image=args.image,
        board=args.board,
        config=config,
        heap=parse_heap(args.heap),
        runtime=args.runtime,
        refresh_firmware=args.refresh_firmware,
        temperature=args.temperature,
        humidity=args.humidity,
        battery=args.battery,
        echo=echo,
        modem=args.modem,
        usb_port=None if args.usb_port < 0 else args.usb_port,
        route=args.route,
        gnss=args.gnss,
    )


def _wait_for_stop(seconds: float | None) -> None:
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait(seconds)


def cmd_vboard(args: argparse.Namespace) -> int:
    def echo(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    vb = _make_vboard(args, None if args.quiet else echo)
    vb.start()
    print(f"vboard: console {vb.console_path}", file=sys.stderr, flush=True)
    if vb.usb is not None:
        print(f"vboard: usb {vb.usb_url}", file=sys.stderr, flush=True)
    print(f"vboard: bench   {vb.workdir} (albatross bench {vb.name} ...)", file=sys.stderr)
    print(f"vboard: image   {vb.image}", file=sys.stderr, flush=True)
    print(f"vboard: runtime {vb.runtime.describe()}; heap {vb.heap} B", file=sys.stderr)
    try:
        _wait_for_stop(args.seconds)
    finally:
        vb.stop()
    return 0


BENCH_OPS = (
    "set",
    "fault",
    "status",
    "snapshot",
    "modem",
    "signal",
    "registration",
    "gnss",
    "reset",
    "power-cut",
)
RESET_KINDS = ("hard", "soft", "watchdog", "brownout")
SIGNAL_KEYS = ("rssi", "ber", "rsrp", "rsrq")
# Names the control request itself uses: a KEY=VALUE cannot be one of them.
_RESERVED_KEYS = ("cmd", "name", "on")


def cmd_bench(args: argparse.Namespace) -> int:
    from host_tools.vboard.bench import BenchClient
    from host_tools.vboard.runner import default_workdir

    # The words are checked before the bench is asked, so a typo is named as such even
    # when the board is not running.
    op, rest = args.op, list(args.args)
    if op == "set":
        if not rest:
            raise ValueError("usage: albatross bench NAME set KEY=VALUE... (temperature=21.5 ...)")
        request = ("set", _bench_pairs(rest, "set"))
    elif op == "fault":
        request = ("fault", _bench_fault_args(rest))
    elif op in ("status", "snapshot", "modem"):
        _bench_no_args(op, rest)
        request = (op, {})
    elif op == "signal":
        values = _bench_pairs(rest, "signal")
        if not values:
            raise ValueError("usage: albatross bench NAME signal rssi=N [ber=N rsrp=N rsrq=N]")
        for key, value in values.items():
            if key not in SIGNAL_KEYS:
                raise ValueError(f"signal: unknown key {key!r} (known: {', '.join(SIGNAL_KEYS)})")
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"signal: {key} must be an integer, got {value!r}")
        request = ("modem_signal", values)
    elif op == "registration":
        if len(rest) != 1:
            raise ValueError(
                "usage: albatross bench NAME registration "
                "home|roaming|searching|denied|not_registered"
            )
        request = ("modem_registration", {"state": rest[0]})
    elif op == "gnss":
        request = _bench_gnss(rest)
    elif op == "reset":
        if len(rest) > 1 or (rest and rest[0] not in RESET_KINDS):
            raise ValueError(f"usage: albatross bench NAME reset [{'|'.join(RESET_KINDS)}]")
        request = ("reset", {"kind": rest[0] if rest else "hard"})
    elif op == "power-cut":
        request = ("power_cut", {"off_s": _bench_off_seconds(rest)})
    else:
        raise ValueError(f"unknown bench operation {op!r} (known: {', '.join(BENCH_OPS)})")
    client = BenchClient(args.workdir or default_workdir(args.name))
    cmd, values = request
    result = client.call(cmd, **values)
    print(json.dumps(result, indent=None if args.json else 2, sort_keys=True))
    return 0


def _bench_value(text: str) -> object:
    """A KEY=VALUE value by its type: int (10 or 0x44), float, true/false, none, else text."""
    for convert in (int, lambda t: int(t, 0), float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None, "null": None}.get(text.lower(), text)


def _bench_pairs(words: list[str], what: str) -> dict[str, object]:
    """KEY=VALUE words -> {key: typed value}; anything else is a usage error."""
    values: dict[str, object] = {}
    for word in words:
        key, sep, text = word.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{what}: expected KEY=VALUE, got {word!r}")
        if key in _RESERVED_KEYS:
            raise ValueError(f"{what}: {key!r} cannot be a KEY")
        if key in values:
            raise ValueError(f"{what}: {key} given twice")
        values[key] = _bench_value(text)
    return values


def _bench_fault_args(rest: list[str]) -> dict[str, object]:
    """FAULT [on|off] [KEY=VALUE...] -> the fault request's arguments."""
    usage = "usage: albatross bench NAME fault FAULT [on|off] [KEY=VALUE...]"
    if not rest or "=" in rest[0]:
        raise ValueError(usage)
    name, words = rest[0], rest[1:]
    on = True
    if words and "=" not in words[0]:
        switch = words.pop(0).lower()
        if switch not in ("on", "off"):
            raise ValueError(f"fault {name}: expected on or off, got {switch!r} ({usage})")
        on = switch == "on"
    return {"name": name, "on": on, **_bench_pairs(words, f"fault {name}")}


def _bench_no_args(op: str, rest: list[str]) -> None:
    if rest:
        raise ValueError(f"usage: albatross bench NAME {op} (it takes nothing more)")


def _bench_off_seconds(rest: list[str]) -> float:
    usage = "usage: albatross bench NAME power-cut [OFF_SECONDS]"
    if not rest:
        return 0.2
    if len(rest) > 1:
        raise ValueError(usage)
    try:
        seconds = float(rest[0])
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= 3600:
        raise ValueError(f"power-cut: OFF_SECONDS must be 0..3600 seconds, got {rest[0]!r}")
    return seconds


def _bench_gnss(rest: list[str]) -> tuple[str, dict]:
    """`albatross bench NAME gnss [route FILE [speed=M/S] | park | drive]` -> the request."""
    if not rest:
        return "gnss", {}
    if rest[0] == "route" and len(rest) >= 2 and "=" not in rest[1]:
        values = _bench_pairs(rest[2:], "gnss route")
        if set(values) - {"speed"}:
            raise ValueError("gnss route: the only KEY is speed=M/S")
        return "gnss_route", {"path": str(Path(rest[1]).expanduser().resolve()), **values}
    if rest[0] in ("park", "drive") and len(rest) == 1:
        return "gnss_park", {"on": rest[0] == "park"}
    raise ValueError("usage: albatross bench NAME gnss [route FILE [speed=M/S] | park | drive]")


def cmd_demo(args: argparse.Namespace) -> int:
    from host_tools.demo import run_demo

    return run_demo(seconds=args.seconds, interval=args.interval, heap=args.heap, modem=args.modem)


def cmd_monitor(args: argparse.Namespace) -> int:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops it like Ctrl-C: --check still reports

    signal.signal(signal.SIGTERM, interrupt)
    if not args.check:
        from host_tools.monitor import monitor

        if args.first_seq is not None:
            raise ValueError("--first-seq needs --check")
        return monitor(args.broker, seconds=args.seconds, until_idle=args.idle, as_json=args.json)

    from host_tools.delivery_check import check

    def subscribed() -> None:
        print(
            f"monitor: checking telemetry and alarms from {args.broker}",
            file=sys.stderr,
            flush=True,
        )

    tally = check(
        args.broker,
        seconds=args.seconds,
        until_idle=args.idle,
        first_seq=args.first_seq,
        on_subscribed=subscribed,
    )
    if args.json:
        print(json.dumps(tally.report(), sort_keys=True), flush=True)
    else:
        print(tally.format_report(), flush=True)
    return 0 if tally.ok else 1


def cmd_runtime(args: argparse.Namespace) -> int:
    from host_tools.vboard import runtime as rt
    from host_tools.vboard.runtime import build

    if args.op == "build":
        out = rt.frozen_path(args.board) if args.board else rt.bin_dir() / rt.RUNTIME_NAME
        manifest = build.board_manifest(args.board) if args.board else None
        print(f"runtime: {build.build(out, manifest=manifest)}")
        return 0
    runtime = rt.resolve(args.runtime, board=args.board)
    print(runtime.describe())
    print(f"path: {runtime.path}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from host_tools.benchmark import run

    run(args.out, quick=args.quick)
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    """`albatross campaign power-cut`: progress on stderr, the summary as JSON on stdout;
    0 when nothing was lost, conflicted, failed to boot or damaged, else 1."""
    import tempfile

    from host_tools.broker import start_broker
    from host_tools.vboard.campaign import run_campaign, write_json

    work = args.work or Path(tempfile.mkdtemp(prefix="albatross-campaign-"))

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    progress(f"power-cut campaign: {args.points} cut points, seed {args.seed}, work {work}")
    broker = start_broker(log_dir=work / "broker")
    try:
        result = run_campaign(
            broker,
            work,
            points=args.points,
            targeted=args.targeted,
            scenario_s=args.scenario_s,
            seed=args.seed,
            log=progress,
            keep=args.keep,
        )
    finally:
        broker.stop()
    if args.json:
        write_json(result, args.json)
    summary = result.summary()
    print(json.dumps(summary, indent=1))
    bad = (
        summary["lost"]
        + summary["seq_conflicts"]
        + summary["renumbered"]
        + summary["failed_boots"]
        + summary["damaged_configs"]
    )
    return 1 if bad else 0


def cmd_console(args: argparse.Namespace) -> int:
    from host_tools.console.terminal import run_console

    try:
        return run_console(args.port, baud=args.baud, log_path=args.log)
    except KeyboardInterrupt:
        return 130


def cmd_config(args: argparse.Namespace) -> int:
    from host_tools.console import device_config
    from host_tools.console.session import open_session

    if args.broker:
        return _config_over_broker(args)
    if args.device or args.unset or args.timeout is not None:
        raise ValueError("--device, --unset and --timeout go with --broker, not --port")
    words = list(args.words)
    secret = device_config.secret_without_value(args.op, words)
    if secret:  # typed here, unseen, rather than left in the shell's history
        words.append(getpass.getpass(f"{secret} (not shown): "))
    device_config.check_request(args.op, words)  # a bad value fails before the port
    with open_session(args.port, baud=args.baud) as cli:
        print(device_config.config_command(cli, args.op, words, as_json=args.json))
    return 0


def _config_over_broker(args: argparse.Namespace) -> int:
    """`albatross config show|get|set --broker URL --device ID`: 0 applied, 2 refused (on
    the host or by the device, the key named), 1 no answer in time."""
    from host_tools import remote, remote_text

    if not args.device:
        raise ValueError("--broker needs --device ID (the tracker's device id)")
    if args.op != "set":
        return _reported_config(args)

    values = _broker_assignments(args.words)
    timeout = remote.DEFAULT_TIMEOUT_S if args.timeout is None else args.timeout

    def sent(request_id: str, status: dict | None) -> None:
        state = remote.describe_status(status, args.broker)
        print(
            f"config: request {request_id} sent; {args.device} {state}; waiting up to "
            f"{timeout:g} s for its answer",
            file=sys.stderr,
            flush=True,
        )

    try:
        result = remote.set_config(
            args.broker, args.device, values, args.unset, timeout=timeout, on_sent=sent
        )
    except remote.NoAnswer as e:
        return _no_answer(e, args)
    except KeyboardInterrupt:  # Ctrl-C while waiting: the retained request stays anyway
        print("albatross: interrupted; a request already sent stays retained", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
    elif result.ok:
        print("\n".join(remote_text.config_result_lines(result)))
    if not result.ok:
        print(f"albatross: {remote_text.refusal(result)}", file=sys.stderr)
        return 2
    return 0


def _reported_config(args: argparse.Namespace) -> int:
    """`config show|get [KEY] --broker`: the config the device last reported (retained)."""
    from host_tools import remote, remote_text

    if args.unset or args.timeout is not None:
        raise ValueError("--unset and --timeout go with `config set`")
    wanted = 1 if args.op == "get" else 0
    if len(args.words) != wanted:
        key = " KEY" if wanted else ""
        raise ValueError(f"usage: albatross config {args.op} --broker URL --device ID{key}")
    name = args.words[0] if wanted else None
    if name is not None:
        remote.check_key(name)  # an unknown key fails before the broker, as over --port
    reported = remote.get_config(args.broker, args.device)
    if name is not None and name not in reported.config:
        raise ValueError(f"{args.device} did not report {name} (older firmware?)")
    if args.json:
        config = reported.config if name is None else {name: reported.config[name]}
        print(json.dumps(config, sort_keys=True))
    else:
        print("\n".join(remote_text.config_lines(reported.config, name)))
    return 0


def _broker_assignments(words: list[str]) -> dict[str, str]:
    """KEY=VALUE words; a secret key alone (`mqtt_password`) is asked for, unseen, rather
    than left in the shell's history (as `config set --port` does)."""
    from host_tools import remote
    from host_tools.console import values

    typed = []
    for word in words:
        if "=" not in word and word in values.schema_keys() and values.is_secret(word):
            word = f"{word}={getpass.getpass(f'{word} (not shown): ')}"
        typed.append(word)
    return remote.parse_assignments(typed)


def _no_answer(error: Exception, args: argparse.Namespace) -> int:
    if args.json:
        print(
            json.dumps(
                {
                    "device": args.device,
                    "id": error.request_id,
                    "answered": False,
                    "status": error.status,
                    "error": str(error),
                },
                sort_keys=True,
            )
        )
    print(f"albatross: {error}", file=sys.stderr)
    return 1


def cmd_cmd(args: argparse.Namespace) -> int:
    """`albatross cmd --broker URL --device ID NAME [KEY=VALUE ...]`: 0 done, 2 refused (on
    the host, or the device answered with an error), 1 no ack in time."""
    import difflib

    from host_tools import remote, remote_text

    known = remote.firmware_downlink().COMMANDS
    if args.name not in known:
        near = difflib.get_close_matches(args.name, list(known), n=1)
        hint = f"did you mean {near[0]}?" if near else "one of " + ", ".join(known)
        raise ValueError(f"unknown command {args.name!r} ({hint})")

    def sent(request_id: str, status: dict | None) -> None:
        state = remote.describe_status(status, args.broker)
        print(
            f"cmd: {args.name} sent as {request_id}; {args.device} {state}; waiting up to "
            f"{args.timeout:g} s for its ack",
            file=sys.stderr,
            flush=True,
        )

    try:
        ack = remote.send_command(
            args.broker,
            args.device,
            args.name,
            remote.command_args(args.args),
            timeout=args.timeout,
            on_sent=sent,
        )
    except remote.NoAnswer as e:
        return _no_answer(e, args)
    except KeyboardInterrupt:
        print("albatross: interrupted before the ack came", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(ack.to_json(), sort_keys=True))
    elif ack.ok:
        print("\n".join(remote_text.command_lines(ack)))
    if not ack.ok:
        print(f"albatross: {args.device}: {ack.cmd} failed: {ack.error}", file=sys.stderr)
        return 2
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from host_tools.console import values
    from host_tools.console.provision import provision
    from host_tools.console.session import open_session

    wanted = values.load_file(args.file)
    with open_session(args.port, baud=args.baud) as cli:
        report = provision(cli, wanted)
    print(json.dumps(report.to_json(), sort_keys=True) if args.json else report.format())
    return 0


def cmd_build_image(args: argparse.Namespace) -> int:
    from host_tools.build_image import build, summary
    from host_tools.console import values

    config = values.load_file(args.config) if args.config else None
    manifest = build(args.board, args.out, config=config, firmware=args.firmware)
    if args.json:
        print(json.dumps(manifest, sort_keys=True))
    else:
        print("\n".join(summary(manifest, args.out)))
    return 0


def _flash_payload(args: argparse.Namespace, work: Path, config: dict | None = None):
    from host_tools.flash.payload import build_payload, load_config

    config = load_config(args.config) if config is None else config
    return build_payload(args.board, work, firmware=args.firmware, config=config)


def cmd_flash(args: argparse.Namespace) -> int:
    import tempfile

    from host_tools.flash.errors import FlashError
    from host_tools.flash.flasher import flash_board
    from host_tools.flash.payload import check_device_id
    from host_tools.flash.progress import StageLines

    if args.device_id:
        check_device_id(args.device_id)
    lines = StageLines()
    with tempfile.TemporaryDirectory(prefix="albatross-flash-") as tmp:
        payload = _flash_payload(args, Path(tmp))
    what = "full flash" if payload.flash is not None else "filesystem only"
    lines.done(
        "image", f"{args.board}: app {payload.app_version}, {what}, {payload.write_size} bytes"
    )
    report = flash_board(
        args.port,
        payload,
        device_id=args.device_id,
        baud=args.baud,
        boot_timeout=args.boot_timeout,
        on_stage=lines.done,
        on_progress=lines.progress,
    )
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True), flush=True)
    if report.result != "ok":
        raise FlashError(report.error or "failed", stage=report.stage)
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    import tempfile

    from host_tools.flash.fleet import (
        REPORT_CSV,
        REPORT_JSON,
        TrayLines,
        fleet_flash,
        read_devices,
    )

    ports = [p.strip() for p in args.ports.split(",") if p.strip()]
    if not ports:
        raise ValueError("--ports lists no port")
    rows = read_devices(args.devices)
    config = None
    with tempfile.TemporaryDirectory(prefix="albatross-fleet-") as tmp:
        payload = _flash_payload(args, Path(tmp), config)
    if "device_id" in payload.config:
        raise ValueError(
            "--config sets device_id, which must differ per board: put it in devices.csv"
        )
    lines = TrayLines(ports)
    t = time.monotonic()
    reports, _rows = fleet_flash(
        ports, rows, payload, args.out, baud=args.baud, boot_timeout=args.boot_timeout, lines=lines
    )
    wall = time.monotonic() - t
    counts = {k: sum(r.result == k for r in reports) for k in ("ok", "skipped", "failed")}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    print(
        f"fleet: {summary} of {len(reports)} in {wall:.1f} s; report "
        f"{args.out / REPORT_CSV}, {args.out / REPORT_JSON}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps([r.to_json() for r in reports], sort_keys=True))
    return 0 if counts["failed"] == 0 else 1


def cmd_deploy(args: argparse.Namespace) -> int:
    import os

    from host_tools.deploy import DeployStopped, run

    # Test hook (hil_tests/test_deploy.py): stop as a killed deploy would, after the .new
    # files and the journal are on the board and before any rename.
    stop = os.environ.get("ALBATROSS_DEPLOY_STOP") == "before-renames"
    try:
        report = run(args.port, board=args.board, keep=args.keep, stop_before_renames=stop)
    except DeployStopped as e:
        print(f"albatross: {e}", file=sys.stderr, flush=True)
        os._exit(3)
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
    else:
        print(report.summary())
    return 0


def cmd_gnss(args: argparse.Namespace) -> int:
    from host_tools.gnss_replay import run

    return run(args.log, as_json=args.json)


def _flash_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", required=True, help="board folder under boards/")
    p.add_argument(
        "--firmware",
        type=Path,
        help="the board's stock MicroPython build (combined .bin): write the whole flash; "
        "without it only the filesystem partition is written",
    )
    p.add_argument("--config", type=Path, help="device settings, .toml or .json")
    p.add_argument(
        "--baud", type=int, default=921600, help="flashing baud rate (default: %(default)s)"
    )
    p.add_argument(
        "--boot-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="wait this long for the first boot's status; 0: do not wait (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="the report as JSON on stdout")


def build_parser() -> argparse.ArgumentParser:
    from host_tools.remote import COMMANDS as _COMMANDS

    parser = argparse.ArgumentParser(prog="albatross", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("vboard", help="run a virtual board in the foreground")
    _vboard_args(p)
    p.add_argument("--quiet", action="store_true", help="don't echo the console here")
    p.add_argument("--seconds", type=float, help="stop after this long")
    p.set_defaults(func=cmd_vboard)

    p = sub.add_parser("bench", help="control a running virtual board's bench")
    p.add_argument("name", help="the vboard's --name (or device id)")
    p.add_argument("op", help=" | ".join(BENCH_OPS))
    p.add_argument(
        "args",
        nargs="*",
        help="set KEY=VALUE... | fault FAULT [on|off] [KEY=VALUE...] | signal rssi=N | "
        "registration STATE | reset [hard|soft|watchdog|brownout] | power-cut [OFF_SECONDS] | "
        "gnss [park | drive | route FILE]; values are typed: 3, 0x44, 0.2, true, none, text",
    )
    p.add_argument("--workdir", type=Path, help="the vboard's --workdir, if it set one")
    p.add_argument("--json", action="store_true", help="one-line JSON output")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="broker + a virtual tracker, telemetry shown live")
    p.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    p.add_argument("--interval", type=int, default=2, help="report interval, s")
    p.add_argument("--heap", default=None, help="MicroPython heap for the vboard")
    p.add_argument(
        "--modem",
        default="board",
        help="sim7600 | a7670 | bg96 | none (default: the board's, a SIM7600)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("runtime", help="build or show the virtual board's MicroPython")
    p.add_argument("op", choices=("build", "info"))
    p.add_argument("--board", help="build: freeze this board's manifest.py (the app) into it")
    p.add_argument("--runtime", choices=("esp32", "esp32-frozen", "unix64"), help="info: which")
    p.set_defaults(func=cmd_runtime)

    p = sub.add_parser("benchmark", help="measure boot time, heap and the smallest heap")
    p.add_argument("--out", type=Path, default=Path("bench-results.json"))
    p.add_argument("--quick", action="store_true", help="fewer runs, 20 s soaks")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser(
        "campaign",
        help="long-running robustness campaigns on virtual boards",
        description="power-cut: cut a virtual tracker's power during flash programs and "
        "erases (torn writes) at many points of a scenario, with its own broker; after "
        "each cut the board must boot, store and deliver a new reading, and deliver every "
        "reading stored before the cut with its content (host_tools/vboard/campaign.py).",
        epilog="exit status: 0 when nothing was lost, conflicted, failed to boot or damaged; "
        "1 otherwise (the cuts that failed are kept in --work and named in the summary).",
    )
    p.add_argument("kind", choices=("power-cut",))
    p.add_argument(
        "--points", type=int, default=300, help="cut points to try (default: %(default)s)"
    )
    p.add_argument(
        "--targeted",
        type=int,
        default=60,
        metavar="N",
        help="up to N more cut points at the reference run's config, cursor, roll-over and "
        "segment-delete operations (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=1, help="where cuts fall and how they tear (default: 1)"
    )
    p.add_argument(
        "--scenario-s",
        type=float,
        default=6.0,
        metavar="S",
        help="length of the scenario the cut points spread over (default: %(default)s)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="summary and every cut, as JSON")
    p.add_argument("--work", type=Path, metavar="DIR", help="images and logs (default: a temp)")
    p.add_argument("--keep", action="store_true", help="keep every cut's image and logs")
    p.set_defaults(func=cmd_campaign)

    p = sub.add_parser(
        "monitor",
        help="print telemetry, alarms and status from a broker, or check delivery (--check)",
        description="Print one line per message (per record of a telemetry or alarm batch; "
        "alarms start with ALARM), or with --check dedupe telemetry and alarms by (device, "
        "lane, seq) and report per device and lane what arrived, duplicates and gaps "
        "(missing sequence numbers).",
        epilog="exit status with --check: 0 when no device has gaps; 1 when any device has "
        "gaps on either lane, a seq carried two different records, or nothing arrived; "
        "2 when the broker cannot be reached.",
    )
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="default: %(default)s")
    p.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    p.add_argument(
        "--idle",
        type=float,
        metavar="S",
        help="stop when no message came for S seconds (since subscribing)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per message; with --check the report as JSON",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="subscribe to albatross/+/telemetry and albatross/+/alarm and print a delivery "
        "report at the end",
    )
    p.add_argument(
        "--first-seq",
        type=int,
        metavar="N",
        help="with --check: devices start at seq N on both lanes, so a missing head is a gap",
    )
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser(
        "console",
        help="a terminal on a tracker's technician command line (Ctrl-] exits)",
        description="Relay the keyboard to the device and its console to the screen; "
        "Ctrl-] exits. The device echoes and edits the line: Backspace, Ctrl-U, Ctrl-W, "
        "Tab completion and the history (Up/Down, the last 8 commands) are the device's "
        "own. Ctrl-C reaches the device too (it leaves the app for the MicroPython REPL).",
    )
    _port_args(p)
    p.add_argument(
        "--log", type=Path, metavar="FILE", help="also append everything the device sends"
    )
    p.set_defaults(func=cmd_console)

    p = sub.add_parser(
        "config",
        help="show, get or set a tracker's config over its command line or over MQTT",
        description="Values are checked against the firmware's schema before the port is "
        "opened or anything is published. `set` stores all pairs or none, as the device "
        "does. With --broker the request is published retained on "
        "albatross/ID/config/set and the device's answer on config/reported is awaited; "
        "a device that is offline applies it when it reconnects. `show` and `get` with "
        "--broker read the config the device last reported.",
        epilog="exit status with --broker set: 0 when the device applied the request; 2 when "
        "a key or value is refused (on the host, or by the device: the key is named); 1 when "
        "no answer came within --timeout.",
    )
    p.add_argument("op", choices=("show", "get", "set"))
    p.add_argument(
        "words",
        nargs="*",
        metavar="KEY [VALUE ...]",
        help="get: KEY; set with --port: KEY VALUE ...; set with --broker: KEY=VALUE ... "
        "(a secret key without a value: asked for)",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--port",
        help="the tracker's serial console: /dev/ttyUSB0, a vboard's pty, socket://HOST:PORT, "
        "rfc2217://HOST:PORT",
    )
    where.add_argument(
        "--broker", help="mqtt://HOST:PORT: through the broker the tracker reports to"
    )
    p.add_argument("--baud", type=int, default=115200, help="with --port (default: %(default)s)")
    p.add_argument("--device", help="with --broker: the tracker's device id")
    p.add_argument(
        "--unset",
        action="append",
        default=[],
        metavar="KEY",
        help="with --broker set: put KEY back to its default; repeatable",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="with --broker set: wait this long for the device's answer (default: 30)",
    )
    p.add_argument("--json", action="store_true", help="one-line JSON output")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "cmd",
        help="send a tracker a command over MQTT and wait for its ack",
        description="Publish {id, cmd, args} on albatross/ID/cmd (QoS 1, not retained) and "
        "wait for the ack with the same id on cmd/ack. Commands are not queued for a device "
        "that is offline: retry when it is online. "
        + "; ".join(f"{name}: {what}" for name, what in _COMMANDS.items())
        + ".",
        epilog="exit status: 0 when the device did it; 2 when it answered with an error or "
        "the command was refused on the host; 1 when no ack came within --timeout.",
    )
    p.add_argument("name", metavar="NAME", help=", ".join(_COMMANDS))
    p.add_argument(
        "args", nargs="*", metavar="KEY=VALUE", help="arguments (values as JSON, else text)"
    )
    p.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    p.add_argument("--device", required=True, help="the tracker's device id")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="wait this long for the ack (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="the ack as one JSON object")
    p.set_defaults(func=cmd_cmd)

    p = sub.add_parser(
        "provision",
        help="make a tracker's config match a .toml or .json file, and verify it",
        description="Read a flat key = value table, check it against the firmware's "
        "schema, send only the keys that differ, read the config back and check every key "
        "(a secret only for being set or empty: the device shows it as ***).",
        epilog="exit status: 0 when the device holds the file's values; 2 when a value is "
        "refused (the key is named) or the device cannot be reached.",
    )
    p.add_argument("--file", type=Path, required=True, help="device.toml or device.json")
    _port_args(p)
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser(
        "build-image",
        help="build a board's filesystem image, manifest and (with --firmware) full flash",
        description="The app compiled with mpy-cross for the board's MicroPython, in a "
        "littlefs2 image the size of the board's vfs partition (MicroPython v1.28's ESP32 "
        "layout), and manifest.json (files with SHA-256, versions, offsets). With --firmware, "
        "also flash.bin: bootloader, partition table and app of that build with the "
        "filesystem, one image of the whole flash to write at 0x0.",
    )
    p.add_argument("--board", required=True, help="board folder under boards/")
    p.add_argument("--config", type=Path, help="device settings, .toml or .json (config.json)")
    p.add_argument(
        "--firmware",
        type=Path,
        help="the board's stock MicroPython build, the combined .bin written at 0x1000",
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_build_image)

    p = sub.add_parser(
        "flash",
        help="flash, provision and boot one board over USB (esptool)",
        description="Connect (DTR/RTS into download mode), check the chip and its flash size "
        "against the board, write the image with the device id and config in its "
        "config.json, verify (MD5), hard-reset, and wait for the firmware's status on the "
        "console. One line per stage on stderr.",
        epilog="exit status: 0 when the board runs the image; 2 with one line on stderr "
        "otherwise (port missing or busy, no answer, wrong chip, flash too small, verify "
        "mismatch, no first boot).",
    )
    p.add_argument(
        "--port", required=True, help="serial port: /dev/ttyUSB0, rfc2217://HOST:PORT, ..."
    )
    p.add_argument(
        "--device-id", help="the board's device id (default: the firmware's own, alb-<MAC hex>)"
    )
    _flash_args(p)
    p.set_defaults(func=cmd_flash)

    p = sub.add_parser("fleet", help="operations on a tray of boards")
    fleet = p.add_subparsers(dest="fleet_command", required=True)
    p = fleet.add_parser(
        "flash",
        help="flash a tray of boards at once",
        description="Flash every port at once (one thread each), one line per port. "
        "devices.csv: a header, then per board a port or mac column, device_id (empty: "
        "alb-<MAC hex>) and any config keys as further columns. The report, one row per "
        "board, goes to OUT/fleet-report.csv and .json; a rerun skips the boards it shows "
        "done with the same image and config.",
        epilog="exit status: 0 when every board is done, 1 when any failed, 2 when nothing "
        "could start (bad devices.csv, image, ...).",
    )
    p.add_argument("--ports", required=True, help="comma-separated serial ports")
    p.add_argument("--devices", type=Path, required=True, help="devices.csv")
    p.add_argument(
        "-o", "--out", type=Path, default=Path("."), help="report folder (default: here)"
    )
    _flash_args(p)
    p.set_defaults(func=cmd_fleet)

    p = sub.add_parser(
        "deploy",
        help="update the app on a running board over its REPL, sending only what changed",
        description="Stop the app (Ctrl-C, raw REPL), hash the app's files on the board, send "
        "the changed and missing ones (the set `build-image` puts on the flash: boot.py, "
        "main.py, tracker/ as .mpy, the board's files), remove files under tracker/ the app "
        "no longer has, then soft-reset so the app starts again. Files are written as "
        ".new and renamed into place from a journal: a deploy cut short is finished by the "
        "next deploy, or by boot.py at the next reset.",
        epilog="exit status: 0 when the board runs the deployed app; 2 with one line on "
        "stderr otherwise (port missing or busy, no REPL, a device error).",
    )
    p.add_argument(
        "--port", required=True, help="serial port: /dev/ttyUSB0, a vboard's pty, rfc2217://..."
    )
    p.add_argument("--board", help="board folder under boards/ (default: the board's board.json)")
    p.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="PATH",
        help="a device path to leave as it is (neither sent nor removed), e.g. a board.json "
        "tailored on the board; repeatable",
    )
    p.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("gnss", help="GNSS tools")
    gnss = p.add_subparsers(dest="gnss_command", required=True)
    p = gnss.add_parser(
        "replay",
        help="run an NMEA log through the firmware's parser and list its fixes",
        description="Feed LOG line by line to the firmware's NMEA parser and print one line "
        "per fix (each epoch with a position), then the sentence counts. Lines starting "
        "with # are skipped.",
    )
    p.add_argument("log", help="NMEA log file, - for stdin")
    p.add_argument(
        "--json",
        action="store_true",
        help="one gpsd-style TPV object per fix (class, mode, time, lat, lon, altMSL, speed, "
        "track), the summary on stderr",
    )
    p.set_defaults(func=cmd_gnss)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills a subcommand's `words` at the first positional, so in `config set
    # --broker URL --device ID KEY=VALUE` the pairs after the options come back unknown:
    # they are words all the same (anything but an option; "-2" is a value).
    if extra and isinstance(getattr(args, "words", None), list):
        options = [e for e in extra if e.startswith("-") and not e[1:2].isdigit()]
        if not options:
            args.words += extra
            extra = []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except EXPECTED_ERRORS as e:
        print(f"albatross: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
