import asyncio

from mptest import run

from tracker.aio import TimeoutError, sleep_ms, ticks_diff, ticks_ms, wait_for_ms
from tracker.modem.at import AtTimeout
from tracker.modem.link import LADDER, ModemLink


class FakeAt:
    def __init__(self):
        self.answers = True
        self.counters = {"commands": 0, "timeouts": 0, "errors": 0, "urcs": 0}

    async def cmd(self, text, timeout_ms=None):
        if not self.answers:
            raise AtTimeout(text, timeout_ms)


class FakeModem:
    """Records what the supervisor asked for, in order."""

    family = "fake"
    registration = "home"
    pdp_active = True

    def __init__(self):
        self.at = FakeAt()
        self.info = {}
        self.calls = []

    def __getattr__(self, name):
        async def op(*args, **kwargs):
            self.calls.append(name)
            if name == "open_socket":
                return FakeSocket()
            return None

        return op


class FakeSocket:
    def close(self):
        pass


def _fail_and_reopen(link, n):
    async def main():
        for _ in range(n):
            link.session_failed("test")
            await link.open_stream("broker", 1883)

    run(main())


def test_ladder_climbs_in_order_each_rung_twice_and_resets_on_success():
    modem = FakeModem()
    resets = []
    link = ModemLink(modem, reset_mcu=lambda: resets.append(1))
    run(link.open_stream("broker", 1883))  # bring-up
    assert modem.calls[:4] == ["init", "configure", "wait_registered", "activate_pdp"]
    climbed = []
    for _ in range(2 * len(LADDER)):
        _fail_and_reopen(link, 1)
        climbed.append(link.last_recovery.split(" after ")[0])
    assert climbed == [step for step in LADDER for _ in range(2)], climbed  # in order, twice
    for step in LADDER:
        assert link.counters[step] == 2, (step, link.counters)
    assert resets == [1, 1]  # the last rung resets the MCU
    assert "deactivate_pdp" in modem.calls and "cfun_cycle" in modem.calls
    assert modem.calls.count("power_cycle") >= 2
    link.session_up()
    assert link.failures == 0
    _fail_and_reopen(link, 1)
    assert link.counters["reconnect"] == 3  # back at the bottom rung
    assert "reconnect after test" == link.last_recovery


def test_a_modem_that_does_not_answer_is_power_cycled_at_once():
    modem = FakeModem()
    link = ModemLink(modem)
    run(link.open_stream("broker", 1883))
    modem.at.answers = False  # hung: AT times out
    modem.calls.clear()

    async def main():
        link.session_failed("no PINGRESP")
        try:
            await link.open_stream("broker", 1883)
        except Exception:
            pass  # bring-up after the cycle probes AT again, which still times out

    run(main())
    assert link.counters["power_cycle"] == 1 and link.counters["reconnect"] == 0
    assert modem.calls[0] == "power_cycle"


def test_a_data_context_the_modem_reported_lost_is_reactivated_without_reconnecting_first():
    modem = FakeModem()
    link = ModemLink(modem)
    run(link.open_stream("broker", 1883))
    modem.pdp_active = False  # its URC said the context is gone
    modem.calls.clear()
    _fail_and_reopen(link, 1)
    assert link.last_recovery == "reactivate_pdp after test"
    assert link.counters["reconnect"] == 0 and link.counters["reactivate_pdp"] == 1
    assert modem.calls[:2] == ["deactivate_pdp", "init"]
    assert "activate_pdp" in modem.calls
    # Still failing: the ladder goes on from there (the rung's second try, then CFUN).
    _fail_and_reopen(link, 2)
    assert link.counters["reactivate_pdp"] == 2 and link.counters["cfun_cycle"] == 1
    assert link.counters["reconnect"] == 0


def test_a_lost_session_with_the_data_context_up_starts_with_a_reconnect():
    modem = FakeModem()
    link = ModemLink(modem)
    run(link.open_stream("broker", 1883))
    _fail_and_reopen(link, 1)
    assert link.last_recovery == "reconnect after test"
    assert link.counters["reactivate_pdp"] == 0


def _off_the_network_link(registration):
    """A link after many failures (a backoff of at least 30 s) on a modem that is off the
    network; a short base so the wake-up jitter is 50..100 ms."""
    modem = FakeModem()
    modem.registration = registration
    link = ModemLink(modem)
    link.BACKOFF_BASE_MS = 100
    link.failures = 12
    return modem, link


def test_a_backoff_off_the_network_ends_when_the_modem_registers():
    modem, link = _off_the_network_link("denied")
    states = []

    async def network():
        await sleep_ms(20)
        modem.registration = "searching"  # a change, not yet a registration: the wait goes on
        await sleep_ms(20)
        states.append(link.registered_wakes)
        modem.registration = "home"  # its +CxREG URC

    async def main():
        task = asyncio.create_task(network())
        try:
            await wait_for_ms(link.backoff(), 10000)  # the backoff itself is 30..60 s
        except TimeoutError:
            raise AssertionError("the backoff did not end when the modem registered")
        await task

    run(main())
    assert states == [0] and link.registered_wakes == 1, (states, link.registered_wakes)


def test_a_backoff_waits_its_time_when_the_modem_stays_off_or_was_registered():
    for registration in ("denied", "home"):
        modem, link = _off_the_network_link(registration)
        link.failures = 1  # 50..100 ms
        started = ticks_ms()

        run(link.backoff())
        waited = ticks_diff(ticks_ms(), started)
        assert waited >= 50 and link.registered_wakes == 0, (registration, waited)
