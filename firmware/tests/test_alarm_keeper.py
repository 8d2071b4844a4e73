# The app's alarm keeper (tracker/alarms/keeper.py) on a real Store in a temp directory: each
# event reaches the priority lane exactly once across a reboot at any point, the excursion
# goes on after a reboot, and cold-chain windows close on time. CPython and the Unix port.
import json

from mptest import TempDir

from tracker import log
from tracker.alarms.keeper import STATS_EVERY, AlarmKeeper
from tracker.store.queue import Store

log.echo = False
T0 = 1700000000
CFG = {"alarm_temp": "high", "alarm_temp_high_c": 8.0, "alarm_temp_delay_s": 60,
       "alarm_temp_hysteresis_c": 0.5, "stats_window_s": 300}  # fmt: skip


def reading(t):
    return {"temperature": t, "humidity": 50.0, "battery": 3.9, "sensor_error": None}


def boot(d):
    store = Store(d + "/alarms", statvfs=None)
    return AlarmKeeper(CFG, store, "dev", d + "/alarms.json"), store


def lane(store):
    """(seq, alarm, state) of every record in the lane, delivered or not."""
    out = []
    for seq, payload in store.read_batch(100, 100000):
        rec = json.loads(payload)
        out.append((seq, rec["alarm"], rec["state"]))
    return out


def test_an_excursion_raises_once_and_clears_once_across_reboots():
    with TempDir() as d:
        k, store = boot(d)
        k.reading(reading(7.0), T0)
        k.reading(reading(9.0), T0 + 30)  # pending since T0+30
        k.store.close()
        k, store = boot(d)  # a reboot while pending: the delay still counts from T0+30
        assert k.reading(reading(9.1), T0 + 89)[1] == 0
        assert k.reading(reading(9.2), T0 + 90)[1] == 1  # 60 s after the real start
        store.close()
        k, store = boot(d)  # a reboot while raised: no second "raised"
        for s in range(100, 200, 10):
            assert k.reading(reading(9.5), T0 + s)[1] == 0
        assert k.reading(reading(7.0), T0 + 200)[1] == 1
        assert lane(store) == [(0, "temp_high", "raised"), (1, "temp_high", "cleared")]
        store.close()


def test_a_cut_between_the_state_write_and_the_append_is_made_good_at_boot():
    with TempDir() as d:
        k, store = boot(d)
        k.reading(reading(9.0), T0)
        # As if the power went right after the state (with its outbox) was written: the
        # event is in alarms.json but not in the store.
        real_append = store.append
        store.append = lambda payload: None
        k.reading(reading(9.0), T0 + 60)
        store.append = real_append
        with open(d + "/alarms.json") as f:
            saved = json.loads(f.read())
        assert saved["outbox"] == [], "the outbox is emptied after the append"
        # Rebuild the state a cut would have left: the outbox still holding the event.
        rec = {"device_id": "dev", "seq": 0, "ts": T0 + 60, "alarm": "temp_high",
               "state": "raised"}  # fmt: skip
        saved["outbox"] = [[0, rec]]
        with open(d + "/alarms.json", "w") as f:
            f.write(json.dumps(saved))
        store.close()
        k, store = boot(d)
        assert lane(store) == [(0, "temp_high", "raised")] and k.counters["replayed"] == 1
        store.close()
        k, store = boot(d)  # and only once: the store holds it now
        assert lane(store) == [(0, "temp_high", "raised")] and k.counters["replayed"] == 0
        store.close()


def test_windows_close_on_time_and_trips_summarise():
    with TempDir() as d:
        k, store = boot(d)
        assert k.start_trip(T0)["started_at"] == T0
        closed = []
        for i in range(13):  # a reading a minute for 12 minutes
            w, _ = k.reading(reading(4.0 + i % 2), T0 + 60 * i)
            if w is not None:
                closed.append(w)
        assert len(closed) == 2 and closed[0]["n"] == 6 and closed[0]["max"] == 5.0, closed
        store.close()
        k, store = boot(d)  # a power cut: the statistics since the last save are gone
        kept = k.trip.summary()["n"]
        assert 13 - STATS_EVERY < kept <= 13
        for i in range(13, 16):
            k.reading(reading(4.0), T0 + 60 * i)
        k.flush()  # as before a clean reboot: nothing is lost
        store.close()
        k, store = boot(d)
        summary = k.stop_trip(T0 + 960)
        assert summary["n"] == kept + 3 and summary["min"] == 4.0, summary
        assert summary["stopped_at"] == T0 + 960
        assert k.status(T0 + 720)["trip"] is None
        store.close()


def test_a_damaged_state_file_starts_afresh():
    with TempDir() as d:
        with open(d + "/alarms.json", "w") as f:
            f.write('{"rules": [1, 2')
        k, store = boot(d)
        assert k.reading(reading(9.0), T0)[1] == 0 and k.status(T0)["active"]
        store.close()
