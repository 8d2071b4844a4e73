# The technician's command line, end to end on a Tracker (CPython and the Unix port).
import json

from cli_kit import Rig
from mptest import raises, run

from tracker import log
from tracker.aio import sleep_ms, ticks_add


def test_enter_wakes_the_prompt_and_help_lists_every_command():
    async def go():
        with Rig() as r:
            assert await r.type("\r") == "albatross> "
            out = await r.command("help")
            names = [line.split()[0] for line in out[:-1]]
            for name in ("help", "status", "config", "sensor", "modem", "log", "selftest",
                         "reboot", "factory-reset"):  # fmt: skip
                assert name in names, out
            usage = await r.command("help config")
            assert usage[0].startswith("usage: config ")
            assert any("config set KEY VALUE" in u for u in usage)

    run(go())


def test_unknown_command_gets_one_line_with_the_nearest_command():
    async def go():
        with Rig() as r:
            assert await r.command("stauts") == ['error: unknown command "stauts" (try: status)']
            assert await r.command("xyzzy") == ['error: unknown command "xyzzy" (try: help)']

    run(go())


def test_a_refused_value_says_what_is_allowed_and_changes_nothing():
    async def go():
        with Rig() as r:
            before = r.cfg["interval_s"]
            out = await r.command("config set interval_s 0")
            assert out == ['error: interval_s must be a number in 0.02..86400.0, got "0"']
            out = await r.command("config set batch_size 5 interval_s fast")
            assert out == ['error: interval_s must be a number in 0.02..86400.0, got "fast"']
            assert r.cfg["interval_s"] == before and r.cfg["batch_size"] == 20
            with raises(OSError):
                r.stored()  # nothing was written
            out = await r.command("config set intervl_s 5")
            assert out == ['error: unknown key "intervl_s" (try: interval_s)']

    run(go())


def test_a_change_is_on_flash_before_ok_and_says_when_it_applies():
    async def go():
        with Rig() as r:
            out = await r.command("config set interval_s 30 apn iot.example")
            assert out == [
                "ok: interval_s = 30.0 (applied now)",
                'ok: apn = "iot.example" (takes effect at the next reboot)',
            ]
            stored = json.loads(r.stored())
            assert stored["interval_s"] == 30.0 and stored["apn"] == "iot.example"
            assert await r.command("config get apn") == ['apn = "iot.example"']
            assert await r.command("config set interval_s 30") == [
                "ok: interval_s = 30.0 (unchanged)"
            ]
            out = await r.command("config unset apn")
            assert out == ['ok: apn = "" (takes effect at the next reboot)']
            assert json.loads(r.stored())["apn"] == ""

    run(go())


def test_live_keys_reach_the_running_app():
    async def go():
        with Rig() as r:
            await r.command("config set log_level error temperature_offset_c -1.5")
            assert log.level == log.ERROR
            assert r.tracker.sensors.temperature_offset_c == -1.5
            await r.command("config set log_level info")

    run(go())


def test_secrets_never_reach_the_console():
    async def go():
        with Rig() as r:
            out = await r.command("config set mqtt_password hunter2")
            assert out == [  # refused before anything is stored, and without the value
                "error: mqtt_password needs mqtt_user too (MQTT 3.1.1 sends no password "
                "without a user)"
            ]
            await r.command("config set mqtt_user field")
            echo = await r.type("config set mqtt_password hunter2\r")
            assert "hunter2" not in echo and "*******" in echo
            assert 'ok: mqtt_password = "***"' in echo
            assert r.cfg["mqtt_password"] == "hunter2"  # stored as typed
            shown = "\n".join(await r.command("config show"))
            shown += "\n".join(await r.command("config show --json"))
            shown += "\n".join(await r.command("config get mqtt_password --json"))
            shown += "\n".join(await r.command("status --json"))
            shown += "\n".join(await r.command("log 50"))
            assert "hunter2" not in shown and "***" in shown
            # Alone, the key asks for the value and echoes stars.
            ask = await r.type("config set mqtt_password\r")
            assert ask.endswith("mqtt_password (not shown): ")
            typed = await r.type("s3cret\r")
            assert "s3cret" not in typed and "******" in typed
            assert r.cfg["mqtt_password"] == "s3cret"
            # Up-arrow history does not keep a line with a secret.
            await r.command("status")
            recalled = await r.type("\x1b[A\x1b[A")
            assert "hunter2" not in recalled and "s3cret" not in recalled

    run(go())


def test_config_reset_asks_first():
    async def go():
        with Rig() as r:
            await r.command("config set batch_size 7")
            await r.type("\r")
            q = await r.type("config reset\r")
            assert q.endswith("[y/N] ")
            assert "cancelled" in await r.type("n\r")
            assert r.cfg["batch_size"] == 7
            await r.type("config reset\r")
            done = await r.type("y\r")
            assert "ok: batch_size = 20 (applied now)" in done
            assert json.loads(r.stored())["batch_size"] == 20
            assert await r.command("config reset --yes") == ["ok: every key is at its default"]

    run(go())


def test_typing_with_a_typo_and_backspaces_runs_the_corrected_line():
    async def go():
        with Rig() as r:
            await r.type("\r")
            echo = await r.type("stauts")
            assert echo == "stauts"
            assert await r.type("\x7f\x7f\x7f\x7f") == "\b \b" * 4
            out = await r.type("atus\r")
            assert "firmware  albatross" in out and "error:" not in out

    run(go())


def test_a_log_line_redraws_the_prompt_and_the_partial_line():
    async def go():
        with Rig() as r:
            await r.type("\r")
            await r.type("config ge")
            log.i("test", "a log line")
            assert r.take() == "\r\x1b[KI test: a log line\n\r\x1b[Kalbatross> config ge"
            out = await r.type("t batch_size\r")
            assert "batch_size = 20" in out

    run(go())


def test_an_idle_command_line_goes_quiet_and_gives_its_ram_back():
    async def go():
        import sys

        with Rig() as r:
            await r.command("help")
            assert "tracker.cli.commands" in sys.modules
            r.console._last_key = ticks_add(r.console._last_key, -300001)  # 5 min without a key
            log.i("test", "later")
            assert r.take() == "\r\x1b[KI test: later\n"  # the prompt is gone
            assert log.sink is None  # log lines go to the console plainly, as before any key
            assert "tracker.cli.commands" not in sys.modules
            assert "tracker.cli.console" not in sys.modules and r.console is None
            assert await r.command("config get batch_size") == ["batch_size = 20"]

    run(go())


def test_log_lines_wait_while_a_command_runs():
    async def go():
        with Rig() as r:
            await r.type("\r")
            r.console.busy = True
            log.i("test", "while busy")
            assert r.take() == ""
            r.console.busy = False
            r.console._end(["output"])
            assert r.take() == "output\nI test: while busy\nalbatross> "

    run(go())


def test_bad_input_gets_one_line_and_changes_nothing():
    async def go():
        with Rig() as r:
            await r.type("\r")
            out = await r.type("x" * 600 + "\r")
            assert out.endswith(
                "error: line longer than 480 characters; discarded\nalbatross> "
            ), out[-120:]
            out = await r.type(b"config set batch_size 5\xff\xfe\r")
            assert "error: 2 bytes on the line are not text" in out
            assert r.cfg["batch_size"] == 20
            out = await r.type(b'config set mqtt_user "unclosed\r')
            assert 'error: unclosed " quote' in out
            # Control characters that mean nothing here are dropped, not typed.
            out = await r.type(b"sta\x01\x02tus\r")
            assert "firmware  albatross" in out

    run(go())


def test_ctrl_c_leaves_the_app_but_not_inside_line_noise():
    async def go():
        with Rig() as r:
            await r.type("\r")
            await r.type(b"\xf0\x80\x00")  # a terminal at the wrong baud rate
            await r.type(b"\x03")  # within 2 s of noise: noise too
            with raises(KeyboardInterrupt):
                r.console.editor._noise_at = None  # as after 2 quiet seconds
                await r.type(b"\x03")

    run(go())


def test_status_json_is_one_object_with_what_a_technician_needs():
    async def go():
        with Rig() as r:
            out = await r.command("status --json")
            assert len(out) == 1
            d = json.loads(out[0])
            for k in ("fw", "board", "device_id", "uptime_s", "reset_cause", "store", "uplink",
                      "link", "last_reading", "sensors", "heap"):  # fmt: skip
                assert k in d, k
            assert d["device_id"] == "alb-00aabbccddee" and d["board"] == "cli_test"
            assert d["modem"] is None and d["link"]["kind"] == "tcp"

    run(go())


def test_sensor_reads_the_sensor_now():
    async def go():
        with Rig() as r:
            out = await r.command("sensor")
            assert out == ["temperature 4.50 C", "humidity    61.00 %RH", "battery     3.900 V"]
            r.board.bus.stuck = True
            out = await r.command("sensor")
            assert out[-1].startswith("error: sensor bus error")

    run(go())


def test_history_and_completion():
    async def go():
        with Rig() as r:
            await r.command("config get batch_size")
            await r.type("\r")
            assert (await r.type("\x1b[A")).endswith("albatross> config get batch_size")
            await r.type("\x15")  # Ctrl-U
            assert (await r.type("conf\t")).endswith("albatross> config ")
            assert (await r.type("get inter\t")).endswith("config get interval_s ")

    run(go())


def test_selftest_one_line_per_part():
    async def go():
        with Rig() as r:
            out = await r.command("selftest")
            parts = [line.split()[0] for line in out[:-1]]
            assert parts == ["sensor", "battery", "modem", "flash", "clock"], out
            assert out[0].split()[1] == "PASS" and out[3].split()[1] == "PASS"
            r.board.bus.stuck = True
            out = await r.command("selftest")
            assert out[0].split()[1] == "FAIL" and "FAILED" in out[-1]

    run(go())


def test_factory_reset_keeps_only_the_device_id():
    async def go():
        with Rig('{"device_id": "cold-7", "batch_size": 3}') as r:
            r.tracker.store.append(b'{"seq": 0}')
            q = await r.command("factory-reset")
            assert q == [] and r.board.resets == 0  # asked, nothing done yet
            out = await r.type("yes\r")
            assert "erasing config, 1 unsent readings" in out
            assert r.board.resets == 0  # not before the answer is out
            await sleep_ms(400)
            assert r.board.resets == 1
            assert json.loads(r.stored())["device_id"] == "cold-7"
            assert json.loads(r.stored())["batch_size"] == 20  # the default again
            import os

            assert "data" not in os.listdir(".")

    run(go())


def test_a_config_the_flash_refuses_is_one_error_and_changes_nothing():
    async def go():
        with Rig() as r:
            r.tracker.settings.path = "no-such-dir/config.json"  # every save fails (ENOENT)
            out = await r.command("config set batch_size 5")
            assert len(out) == 1 and out[0].startswith("error: could not be stored ("), out
            assert out[0].endswith("; nothing changed")
            assert r.cfg["batch_size"] == 20
            r.cfg.set("batch_size", 7)  # as if changed before the flash went bad
            out = await r.command("config unset batch_size")
            assert len(out) == 1 and out[0].startswith("error: could not be stored ("), out
            assert r.cfg["batch_size"] == 7

    run(go())


def test_a_trip_is_started_shown_and_stopped_from_the_console():
    async def go():
        with Rig() as r:
            assert await r.command("trip") == ["no trip running (trip start begins one)"]
            out = await r.command("trip start")
            assert out[0].startswith("trip started: ") and "n=0" in out[0], out
            assert await r.command("trip start") == [
                "error: a trip is already running (since %s)" % r.tracker.alarms.trip.started_at
            ]
            await r.tracker._reading()  # one stored reading (21.0 C on the fake sensor)
            shown = json.loads((await r.command("trip --json"))[0])
            assert shown["n"] == 1 and shown["min"] == shown["max"], shown
            stopped = await r.command("trip stop")
            assert stopped[0].startswith("trip stopped: ") and "n=1" in stopped[0], stopped
            assert await r.command("trip stop") == ["error: no trip is running"]
            assert await r.command("trip pause") == [
                "error: trip: pause? (start, stop or nothing)"
            ]
            alarms = await r.command("alarms")
            assert alarms[0] == "no alarm pending or raised" and "lane: 0 unsent" in alarms[1]

    run(go())
