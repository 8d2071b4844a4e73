"""albatross deploy: update the app on a running board over its raw REPL, sending only what
changed.

The file set is what the image builder puts on the flash for the board (host_tools/image.py
device_files: boot.py, main.py, tracker/** as .mpy, the board's files). The board hashes its
own copies (sha256, read in small chunks), the host compares, and only changed or missing
files go over the line. Files of the app the host no longer has (under tracker/) are removed.

An interrupted deploy never leaves a mix of old and new app: every file is written to
`<path>.new` and checked, then `deploy.journal` (the renames and removals, one per line) is
written atomically (tmp + rename), and only then is every `.new` renamed into place and the
journal removed. A deploy that finds a journal finishes it first, and so does firmware/boot.py
at every boot, before main.py imports the app.

`deploy(transport, files)` is the library call (tests use it); `run(port, ...)` opens the
port with mpremote's SerialTransport; the CLI (`albatross deploy`) calls run.
`python -m host_tools.deploy measure --port P` times a one-file deploy against
`mpremote fs cp -r` of the whole app.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from host_tools import image as img

JOURNAL = "deploy.journal"
NEW = ".new"
APP_DIR = "tracker/"
# Bytes of a file per w() call, and w() calls per exec: a raw-paste exec of ~3 KB of source
# compiles within a PSRAM-less ESP32's heap (about 110 KB free with the app stopped).
CHUNK = 512
CHUNKS_PER_EXEC = 4
HASH_BATCH = 16  # files hashed per exec (their answer lines stay short)


class DeployError(Exception):
    """A deploy that could not start or finish (no REPL, a device error, a bad hash)."""


class DeployStopped(DeployError):
    """The test hook stopped the deploy after the journal, before any rename."""


# ---- the plan: pure, tested on CPython ---------------------------------------------------


@dataclass
class Plan:
    send: list[str] = field(default_factory=list)  # changed or missing on the board
    delete: list[str] = field(default_factory=list)  # on the board, no longer in the app
    skip: list[str] = field(default_factory=list)  # the board has them already


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _other_form(path: str) -> str | None:
    """A .py beside a .mpy of the same module would win the import (image.py keeps one)."""
    stem, dot, ext = path.rpartition(".")
    if not dot or ext not in ("py", "mpy"):
        return None
    return stem + (".mpy" if ext == "py" else ".py")


def make_plan(
    host: dict[str, str],
    device_hashes: dict[str, str | None],
    device_files: Iterable[str],
    *,
    keep: Iterable[str] = (),
) -> Plan:
    """host: path -> sha256 hex of what should be on the board; device_hashes: path -> sha256
    hex of what is there (None: absent); device_files: the board's root files and everything
    under tracker/. keep: paths neither sent nor removed (e.g. a board.json tailored on the
    board). Removed: files under tracker/ the app no longer has, the other form (.py/.mpy) of
    a module the app ships, and `.new` leftovers of an earlier deploy that is not resent."""
    kept = set(keep)
    plan = Plan()
    for path in sorted(host):
        if path in kept:
            continue
        if device_hashes.get(path) == host[path]:
            plan.skip.append(path)
        else:
            plan.send.append(path)
    sending = set(plan.send)
    for path in sorted(set(device_files)):
        if path in host or path in kept:
            continue
        stale = path.startswith(APP_DIR)
        other = _other_form(path)
        if other is not None and other in host:
            stale = True
        if path.endswith(NEW) and path[: -len(NEW)] in host and path[: -len(NEW)] not in sending:
            stale = True
        if stale:
            plan.delete.append(path)
    return plan


def journal_text(send: Iterable[str], delete: Iterable[str]) -> str:
    """One line per step: a path whose .new is renamed into place, or '-' and a path to
    remove (firmware/boot.py reads the same format)."""
    return "".join(f"{p}\n" for p in send) + "".join(f"-{p}\n" for p in delete)


def parents(paths: Iterable[str]) -> list[str]:
    """The directories to make, parents first."""
    out: set[str] = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return sorted(out, key=lambda d: (d.count("/"), d))


# ---- the device side: short scripts run in the raw REPL ------------------------------------

# Hash in 512-byte chunks into one buffer: no file is ever read whole into the heap.
_HASH_DEF = """import os,hashlib,binascii
_b=bytearray(512)
_m=memoryview(_b)
def _h(p):
 try:f=open(p,'rb')
 except OSError:return '-'
 s=hashlib.sha256()
 while 1:
  n=f.readinto(_b)
  if not n:break
  s.update(_m[:n])
 f.close()
 return binascii.hexlify(s.digest()).decode()
"""

_LIST_DEF = """def _l(d):
 for e in (os.ilistdir(d) if d else os.ilistdir()):
  p=d+'/'+e[0] if d else e[0]
  if e[1]&0x4000:
   if d or p=='tracker':_l(p)
  else:print('F',p)
"""

# The same steps as firmware/boot.py's, for a board whose boot.py predates them.
_FINISH = """import os
for p in open('deploy.journal').read().split('\\n'):
 try:
  if p[:1]=='-':os.remove(p[1:])
  elif p:os.rename(p+'.new',p)
 except OSError:pass
os.remove('deploy.journal')
"""


@dataclass
class Report:
    port: str
    board: str
    checked: int = 0
    sent: list[str] = field(default_factory=list)
    sent_bytes: int = 0
    deleted: list[str] = field(default_factory=list)
    skipped: int = 0
    resumed: bool = False  # a journal from an interrupted deploy was finished first
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        what = f"sent {len(self.sent)} ({self.sent_bytes} bytes)" if self.sent else "sent 0"
        resumed = "; finished an interrupted deploy" if self.resumed else ""
        return (
            f"deploy: {self.board} on {self.port}: checked {self.checked}, {what}, "
            f"deleted {len(self.deleted)}, skipped {self.skipped} in {self.seconds:.1f} s"
            f"{resumed}"
        )


class Device:
    """The raw-REPL steps of a deploy over an mpremote transport (in the raw REPL)."""

    def __init__(self, transport) -> None:
        self.t = transport

    def exec(self, code: str) -> str:
        from mpremote.transport import TransportError, TransportExecError

        try:
            return self.t.exec(code).decode(errors="replace")
        except TransportExecError as e:
            last = (e.error_output.strip().splitlines() or ["?"])[-1]
            raise DeployError(f"the board failed a deploy step: {last}") from None
        except TransportError as e:
            raise DeployError(f"the board stopped answering: {e}") from None

    def has_journal(self) -> bool:
        out = self.exec(
            f"import os\ntry:\n os.stat({JOURNAL!r});print('J')\nexcept OSError:print('-')"
        )
        return out.strip() == "J"

    def finish_journal(self) -> None:
        self.exec(_FINISH)

    def inventory(self, paths: list[str]) -> tuple[dict[str, str | None], list[str]]:
        """(sha256 hex or None for each path, the root files and all files under tracker/)."""
        self.exec(_HASH_DEF + _LIST_DEF)
        listing = [
            line[2:].strip() for line in self.exec("_l('')").splitlines() if line.startswith("F ")
        ]
        return self.hashes(paths), listing

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for i in range(0, len(paths), HASH_BATCH):
            batch = paths[i : i + HASH_BATCH]
            text = self.exec(f"for p in {batch!r}:print(_h(p))")
            answers = text.split()
            if len(answers) != len(batch):
                raise DeployError(f"the board answered {len(answers)} hashes for {len(batch)}")
            for p, h in zip(batch, answers, strict=True):
                out[p] = None if h == "-" else h
        return out

    def make_dirs(self, dirs: list[str]) -> None:
        if dirs:
            self.exec(f"import os\nfor d in {dirs!r}:\n try:os.mkdir(d)\n except OSError:pass")

    def write(self, path: str, data: bytes) -> None:
        self.exec(f"import binascii\n_f=open({path!r},'wb')\n_w=_f.write\n_a=binascii.a2b_base64")
        try:
            step = CHUNK * CHUNKS_PER_EXEC
            for at in range(0, len(data), step):
                lines = [
                    f"_w(_a({binascii.b2a_base64(data[i : i + CHUNK], newline=False)!r}))"
                    for i in range(at, min(at + step, len(data)), CHUNK)
                ]
                self.exec("\n".join(lines))
        finally:
            self.exec("_f.close()")

    def write_journal(self, text: str) -> None:
        tmp = JOURNAL + ".tmp"
        self.write(tmp, text.encode())
        self.exec(f"import os\nos.rename({tmp!r},{JOURNAL!r})")


def deploy(
    transport,
    files: Iterable[tuple[str, bytes]],
    *,
    keep: Iterable[str] = (),
    port: str = "",
    board: str = "",
    stop_before_renames: bool = False,
    on_file: Callable[[str, int], None] | None = None,
) -> Report:
    """Bring the board behind `transport` (an mpremote transport already in the raw REPL)
    to `files` ((device path, bytes)), sending only what changed. The app is not restarted
    here (see run). stop_before_renames: a test hook, raise DeployStopped once the .new files
    and the journal are on the board."""
    t0 = time.monotonic()
    want = dict(files)
    dev = Device(transport)
    report = Report(port=port, board=board, checked=len(want))
    if dev.has_journal():
        dev.finish_journal()
        report.resumed = True
    host = {p: sha256_hex(d) for p, d in want.items()}
    device_hashes, listing = dev.inventory(sorted(want))
    plan = make_plan(host, device_hashes, listing, keep=keep)
    report.skipped = len(plan.skip)
    if plan.send or plan.delete:
        dev.make_dirs(parents(plan.send))
        for path in plan.send:
            dev.write(path + NEW, want[path])
            report.sent.append(path)
            report.sent_bytes += len(want[path])
            if on_file:
                on_file(path, len(want[path]))
        # The flash holds what was sent before anything is committed.
        written = dev.hashes([p + NEW for p in plan.send])
        bad = [p for p in plan.send if written[p + NEW] != host[p]]
        if bad:
            raise DeployError(f"{bad[0]}: the copy on the board differs from the host's")
        dev.write_journal(journal_text(plan.send, plan.delete))
        if stop_before_renames:
            raise DeployStopped("stopped after the journal, before the renames (test hook)")
        dev.finish_journal()
        report.deleted = list(plan.delete)
    report.seconds = time.monotonic() - t0
    return report


def app_files(board: str) -> list[tuple[str, bytes]]:
    """What the image builder puts on the flash for `board` (compiled, as production)."""
    return list(img.device_files(board, compiled=True))


def board_on_device(transport) -> str:
    """The board named in the board's own board.json ("name")."""
    dev = Device(transport)
    out = dev.exec(
        "try:\n import json\n with open('board.json') as f:print(json.load(f).get('name',''))\n"
        "except (OSError,ValueError):print('')"
    ).strip()
    if not out:
        raise DeployError("the board has no board.json naming its board: give --board")
    return out


def open_transport(port: str):
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    try:
        return SerialTransport(port, baudrate=115200)
    except TransportError as e:
        raise DeployError(f"{port}: {e}") from None
    except Exception as e:  # pyserial's SerialException: missing, busy, refused
        raise DeployError(f"{port}: {e}") from None


def soft_reset(transport) -> None:
    """Leave the raw REPL and soft-reset from the friendly one, so main.py runs again."""
    transport.exit_raw_repl()
    transport.serial.write(b"\x04")
    got = transport.read_until(1, b"soft reboot\r\n", timeout=10)
    if not got.endswith(b"soft reboot\r\n"):
        raise DeployError("the board did not soft-reset after the deploy")


def run(
    port: str,
    *,
    board: str | None = None,
    keep: Iterable[str] = (),
    files: list[tuple[str, bytes]] | None = None,
    stop_before_renames: bool = False,
) -> Report:
    """Open `port`, stop the app (Ctrl-C, raw REPL, soft reset: boot.py runs, main.py does
    not), deploy the board's app (or `files`), soft-reset so the app starts again."""
    from mpremote.transport import TransportError

    t0 = time.monotonic()
    transport = open_transport(port)
    stopped = False
    try:
        try:
            transport.enter_raw_repl(soft_reset=True)
        except TransportError as e:
            raise DeployError(f"{port}: no raw REPL ({e}): is MicroPython running?") from None
        board = board or board_on_device(transport)
        files = app_files(board) if files is None else files
        try:
            report = deploy(
                transport,
                files,
                keep=keep,
                port=port,
                board=board,
                stop_before_renames=stop_before_renames,
            )
        except DeployStopped:
            stopped = True
            raise
        soft_reset(transport)
        report.seconds = time.monotonic() - t0
        return report
    finally:
        if not stopped:  # the test hook leaves the port as a killed process would
            try:
                transport.close()
            except OSError:
                pass


# ---- measure -----------------------------------------------------------------------------


def measure(
    port: str,
    *,
    board: str | None = None,
    keep: Iterable[str] = (),
    touch: str = "tracker/log.py",
) -> dict:
    """One-file change deployed by `albatross deploy` against `mpremote fs cp -r` of the whole
    app (with its hash check, and with -f), the same change on the same board. keep: as
    for run, and left out of mpremote's copy too."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    mpremote = str(Path(sys.executable).with_name("mpremote"))
    keep = list(keep)
    source = (img.FIRMWARE_DIR / touch).read_bytes()
    figures: dict = {}
    first = run(port, board=board, keep=keep)  # the board has the app as it is in the tree
    board = first.board
    t = time.monotonic()
    base = app_files(board)
    figures["compile_all_s"] = time.monotonic() - t  # mpy-cross over the app, as the CLI does
    stamp = 0

    def changed() -> list[tuple[str, bytes]]:
        """The app with `touch` changed (a new line), as a developer's edit would."""
        nonlocal stamp
        stamp += 1
        dev, data = img.compile_mpy(touch, source + f"\n_DEPLOY_MEASURE = {stamp}\n".encode())
        return [(p, data if p == dev else d) for p, d in base]

    rep = run(port, board=board, keep=keep, files=changed())
    figures["deploy_s"] = rep.seconds
    figures["deploy_sent"] = rep.sent
    for label, extra in (("mpremote_cp_s", []), ("mpremote_cp_force_s", ["-f"])):
        with tempfile.TemporaryDirectory() as tmp:
            names = []
            for dev_path, data in changed():
                if dev_path in keep:
                    continue
                out = Path(tmp) / dev_path
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
                if "/" not in dev_path:
                    names.append(dev_path)
            t = time.monotonic()
            done = subprocess.run(
                [mpremote, "connect", port, "fs", "cp", "-r", *extra, *names, "tracker", ":"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=900,
            )
            figures[label] = time.monotonic() - t
            if done.returncode:
                raise DeployError(f"mpremote fs cp failed: {done.stderr.strip()[-300:]}")
    run(port, board=board, keep=keep)  # leave the board with the app as it is in the tree
    figures["ratio_cp"] = figures["mpremote_cp_s"] / figures["deploy_s"]
    figures["ratio_cp_force"] = figures["mpremote_cp_force_s"] / figures["deploy_s"]
    return figures


def measure_lines(f: dict) -> list[str]:
    return [
        f"albatross deploy, one-file change: {f['deploy_s']:.2f} s (sent {f['deploy_sent']}; "
        f"the CLI compiles the app first: +{f['compile_all_s']:.2f} s)",
        f"mpremote fs cp -r of the app (skips files whose hash matches): "
        f"{f['mpremote_cp_s']:.2f} s, {f['ratio_cp']:.1f}x",
        f"mpremote fs cp -r -f of the app (copies all): {f['mpremote_cp_force_s']:.2f} s, "
        f"{f['ratio_cp_force']:.1f}x",
    ]


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m host_tools.deploy")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="time a one-file deploy against mpremote fs cp -r")
    m.add_argument("--port", help="a running board's console (default: start a vboard)")
    m.add_argument("--board", help="board folder under boards/ (default: the board's own)")
    m.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.port:
        figures = measure(args.port, board=args.board)
    else:
        import tempfile
        from pathlib import Path

        from host_tools.vboard.runner import VirtualBoard

        with tempfile.TemporaryDirectory(prefix="albatross-deploy-") as tmp:
            with VirtualBoard(name="deploy-measure", workdir=Path(tmp), modem="none") as vb:
                vb.wait_console("I app: stored seq", 60)
                # This board's board.json says "no modem"; the tree's would add one.
                figures = measure(vb.console_path, board="unix_sim", keep=["board.json"])
    print(json.dumps(figures) if args.json else "\n".join(measure_lines(figures)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
