"""A fake tracker on a real MQTT broker, for host-tool tests of remote configuration and
commands: a paho client that speaks the device's side of the wire format (README "Remote
configuration and commands").

- On connect it subscribes to `config/set` and `cmd`, and publishes a retained
  `{"state": "online"}` status; its last will (and `stop()`) is the retained offline status.
- `config/set` is read with the firmware's own downlink parser and answer builder
  (tracker/uplink/downlink.py), applied with its Settings (schema checks, all or nothing,
  atomic save, check_together) to a firmware Config, and answered once per request id on
  `config/reported` (retained).
- `cmd` is read with the firmware's parser (unknown names get its error ack) and answered on
  `cmd/ack`: ping, report-now, trip-start, trip-stop, reboot here; the other known commands
  fail with "not in the fake".
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from host_tools.broker import connect_url
from host_tools.fwconfig import firmware_config

firmware_config()  # puts firmware/ on sys.path
from tracker.config import ConfigError, key  # noqa: E402
from tracker.settings import UNCHANGED, Settings  # noqa: E402
from tracker.uplink import downlink  # noqa: E402

WAIT_S = 10.0


class FakeDevice:
    def __init__(self, url: str, device_id: str) -> None:
        self.url = url
        self.device_id = device_id
        self.config = firmware_config().Config()
        self._flash = tempfile.TemporaryDirectory(prefix="fake-device-")
        self.settings = Settings(self.config, str(Path(self._flash.name) / "config.json"))
        self.answered: dict[str, dict] = {}  # request id -> the answer given
        self.requests: list[dict] = []  # every config/set body received, answered or not
        self.commands: list[dict] = []
        self.trip: str | None = None
        self._ready = threading.Event()
        self._birth: paho.MQTTMessageInfo | None = None
        self._client: paho.Client | None = None

    def topic(self, leaf: str) -> str:
        return f"albatross/{self.device_id}/{leaf}"

    def _status(self, state: str) -> bytes:
        return json.dumps({"state": state, "device_id": self.device_id}).encode()

    def start(self) -> FakeDevice:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.device_id)
        client.will_set(self.topic("status"), self._status("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self._online()
        client.message_callback_add(self.topic("config/set"), self._on_config_set)
        client.message_callback_add(self.topic("cmd"), self._on_cmd)
        self._client = client  # before connecting: the callbacks use it
        client.connect(*connect_url(self.url))
        client.loop_start()
        if not self._ready.wait(WAIT_S):
            raise AssertionError(f"fake device {self.device_id} not subscribed in {WAIT_S} s")
        self._birth.wait_for_publish(WAIT_S)  # the broker holds the online status
        return self

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(self.topic("config/set"), 1), (self.topic("cmd"), 1)])

    def _online(self) -> None:
        # Not waited for here: paho's thread would wait for itself. start() waits.
        self._birth = self._client.publish(self.topic("status"), self._status("online"), 1, True)
        self._ready.set()

    def stop(self) -> None:
        """An orderly goodbye: the retained offline status, then DISCONNECT."""
        if self._client is None:
            return
        self._client.publish(
            self.topic("status"), self._status("offline"), 1, True
        ).wait_for_publish(WAIT_S)
        self._client.disconnect()
        self._client.loop_stop()
        self._client = None

    # --- config/set -------------------------------------------------------------------------

    def _on_config_set(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self.requests.append(json.loads(msg.payload))  # the tests send JSON objects only
        try:
            rid, changes, unset = downlink.parse_config_request(msg.payload)
        except downlink.DownlinkError as e:
            self._reply_config(e.rid, False, e.errors or {"*": e.reason})
            return
        if rid in self.answered:  # an id is answered once (a retained re-delivery)
            return
        for name in unset:
            changes[name] = key(name).default
        try:
            done = self.settings.change(changes)  # all or nothing, as on the device
        except ConfigError as e:  # check_together: nothing was stored
            self._reply_config(rid, False, {e.key: e.reason})
            return
        changed = {name: how for name, _value, how in done if how != UNCHANGED}
        self._reply_config(rid, True, changed=changed)

    def _reply_config(self, rid: str | None, ok: bool, errors=None, changed=None) -> None:
        body = downlink.config_answer(rid, self.config, self.settings, ok, errors, changed)
        if rid is not None:
            self.answered[rid] = json.loads(body)
        self._client.publish(self.topic("config/reported"), body, qos=1, retain=True)

    # --- cmd ----------------------------------------------------------------------------------

    def _on_cmd(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self.commands.append(json.loads(msg.payload))
        try:
            rid, name, args = downlink.parse_command(msg.payload)
        except downlink.DownlinkError as e:
            self._ack(downlink.command_answer(e.rid, e.cmd, error=e.reason))
            return
        if name == "ping":
            self._ack(downlink.command_answer(rid, name, {"pong": True}))
        elif name == "trip-start":
            self.trip = str(args.get("name", "trip"))
            self._ack(downlink.command_answer(rid, name, {"trip": self.trip}))
        elif name == "trip-stop" and self.trip is None:
            self._ack(downlink.command_answer(rid, name, error="no trip running"))
        elif name in ("trip-stop", "report-now", "reboot"):
            self.trip = None if name == "trip-stop" else self.trip
            self._ack(downlink.command_answer(rid, name, {}))
        else:
            self._ack(downlink.command_answer(rid, name, error="not in the fake"))

    def _ack(self, body: bytes) -> None:
        self._client.publish(self.topic("cmd/ack"), body, qos=1, retain=False)
