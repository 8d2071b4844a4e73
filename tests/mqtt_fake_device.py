"""A fake tracker on a real MQTT broker, for host-tool tests of remote configuration and
commands: a paho client that speaks the device's side of the wire format (README "Remote
configuration and commands").

- On connect it subscribes to `config/set` and `cmd`, and publishes a retained
  `{"state": "online"}` status; its last will (and `stop()`) is the retained offline status.
- `config/set` is applied with the firmware's own Settings (tracker/settings.py: schema
  checks, all or nothing, atomic save, check_together) to a firmware Config, and answered
  once per request id on `config/reported` (retained).
- `cmd` is answered on `cmd/ack`: ping, report-now, trip-start, trip-stop, reboot;
  anything else gets `{"ok": false, "error": "unknown command"}`.
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
from tracker.settings import Settings  # noqa: E402

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
        client.connect(*connect_url(self.url))
        client.loop_start()
        self._client = client
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

    def _answer(self, leaf: str, body: dict, retain: bool) -> None:
        self._client.publish(self.topic(leaf), json.dumps(body), qos=1, retain=retain)

    # --- config/set -------------------------------------------------------------------------

    def _on_config_set(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return
        self.requests.append(body)
        if body["id"] in self.answered:  # an id is answered once (a retained re-delivery)
            return
        answer = self.apply(body)
        self.answered[body["id"]] = answer
        self._answer("config/reported", answer, retain=True)

    def apply(self, body: dict) -> dict:
        values = body.get("set") or {}
        unset = body.get("unset") or []
        errors: dict[str, str] = {}
        changes: dict[str, Any] = {}
        for name, value in values.items():
            try:
                changes[name] = key(name).parse(value)
            except ConfigError as e:
                errors[e.key] = e.reason
        for name in unset:
            try:
                changes[name] = key(name).default
            except ConfigError as e:
                errors[e.key] = e.reason
        changed: dict[str, str] = {}
        if not errors:
            try:
                for name, _value, how in self.settings.change(changes):
                    if how != "unchanged":
                        changed[name] = how
            except ConfigError as e:  # check_together: nothing was stored
                errors[e.key] = e.reason
        return {
            "id": body["id"],
            "ok": not errors,
            "errors": errors,
            "changed": changed,
            "config": self.config.to_dict(),
            "pending_reboot": list(self.settings.pending_reboot),
        }

    # --- cmd ----------------------------------------------------------------------------------

    def _on_cmd(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        self.commands.append(body)
        name, args = body.get("cmd"), body.get("args") or {}
        ack: dict[str, Any] = {"id": body.get("id"), "cmd": name, "ok": True}
        if name == "ping":
            ack["result"] = {"pong": True}
        elif name == "trip-start":
            self.trip = str(args.get("name", "trip"))
            ack["result"] = {"trip": self.trip}
        elif name == "trip-stop" and self.trip is None:
            ack = {**ack, "ok": False, "error": "no trip running"}
        elif name in ("trip-stop", "report-now", "reboot"):
            self.trip = None if name == "trip-stop" else self.trip
            ack["result"] = {}
        else:
            ack = {**ack, "ok": False, "error": "unknown command"}
        self._answer("cmd/ack", ack, retain=False)
