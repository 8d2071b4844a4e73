# Family-independent modem behaviour: registration from answers and URCs, SIM checks,
# identity, signal, operator, network time, reboot detection and the family registry.
# Runs under CPython (pytest) and the Unix port (run_mp.py).
from modem_kit import answer, init_script, session, written
from mptest import raises

from tracker.aio import asyncio, sleep_ms
from tracker.modem.base import (
    ModemNotResponding,
    RegistrationDenied,
    RegistrationTimeout,
    SimError,
    cclk_to_unix,
    reg_stat,
)
from tracker.modem.families import make_modem
from tracker.modem.quectel import Bg96, Ec25
from tracker.modem.simcom import A76xx, Sim7600


def test_reg_stat_tells_answers_from_urcs():
    assert reg_stat("+CEREG: 2,1") == 1  # answer: <n>,<stat>
    assert reg_stat('+CEREG: 2,5,"1A2B","01C2D3E4",7') == 5
    assert reg_stat("+CEREG: 2") == 2  # URC: <stat> only
    assert reg_stat('+CEREG: 1,"1A2B","01C2D3E4",7') == 1  # URC with TAC
    assert reg_stat("+CGREG: 0,3") == 3
    assert reg_stat("+CEREG: x") is None


def test_network_time_is_utc_with_quarter_hour_zones():
    # 2024-03-01 00:00 UTC = 1709251200
    assert cclk_to_unix('+CCLK: "24/03/01,00:00:00+00"') == 1709251200
    # -20 quarters = UTC-5: 02:00 local is 07:00 UTC
    assert cclk_to_unix('+CCLK: "24/03/01,02:00:00-20"') == 1709251200 + 7 * 3600
    # +08 = UTC+2: 01:00 local on New Year's Day is 23:00 UTC the day before
    assert cclk_to_unix('+CCLK: "24/01/01,01:00:00+08"') == 1704067200 - 3600
    # +22 = UTC+5:30 (India): quarter hours, not hours
    assert cclk_to_unix('+CCLK: "24/03/01,05:30:00+22"') == 1709251200
    assert cclk_to_unix('+CCLK: "24/02/29,23:59:59"') == 1709251199  # leap day, no zone


def test_network_time_without_network_time_or_malformed_is_none():
    assert cclk_to_unix('+CCLK: "80/01/06,00:00:12+00"') is None  # SIMCom RTC default
    assert cclk_to_unix('+CCLK: "04/01/01,00:00:40+00"') is None  # Quectel default
    assert cclk_to_unix('+CCLK: "24/13/01,00:00:00+00"') is None
    assert cclk_to_unix('+CCLK: "garbage"') is None
    assert cclk_to_unix("") is None

    async def t(m, u):
        answer(u, "AT+CCLK?", '+CCLK: "25/06/15,12:00:00-16"')
        assert await m.network_time() == cclk_to_unix('"25/06/15,16:00:00+00"')

    session(Sim7600, t)


def test_init_reads_identity_and_enables_registration_urcs():
    async def t(m, u):
        init_script(
            u, "AT+CICCID", "+ICCID: 89882390000123456789", "+CGMR: LE20B04SIM7600G22",
            "SIMCOM_SIM7600G-H", "AT+CNMP?", "+CNMP: 2",
        )  # fmt: skip
        info = await m.init()
        assert info == {
            "imei": "867584032113051",
            "iccid": "89882390000123456789",
            "fw": "LE20B04SIM7600G22",
            "model": "SIMCOM_SIM7600G-H",
        }
        cmds = written(u)
        assert cmds.index("ATE0") < cmds.index("AT+CMEE=1") < cmds.index("AT+CPIN?")
        assert "AT+CEREG=2" in cmds and "AT+CGREG=2" in cmds
        assert "AT+CNMP=2" not in cmds  # already automatic: NVRAM not rewritten

    session(Sim7600, t)


def test_init_cross_checks_status_even_when_no_power_on_was_needed():
    class Pin:  # STATUS wired inverted: reads 0 while the modem runs; board.json says 1
        def value(self, v=None):
            return 0

    async def t(m, u):
        init_script(
            u, "AT+CICCID", "+ICCID: 89882390000123456789", "+CGMR: LE20B04SIM7600G22",
            "SIMCOM_SIM7600G-H", "AT+CNMP?", "+CNMP: 2",
        )  # fmt: skip
        await m.init()  # AT answered: the pin's "off" is wrong, counted (once per check)
        assert m.counters["status_pin_mismatch"] == 1

    session(Sim7600, t, status=Pin(), status_active=1)


def test_init_sets_the_rat_preference_when_it_differs():
    async def t(m, u):
        init_script(
            u, "AT+QCCID", "+QCCID: 8949227002805216770F", "BG96MAR02A07M1G", "BG96",
            'AT+QCFG="nwscanmode"', '+QCFG: "nwscanmode",0',
        )  # fmt: skip
        answer(u, 'AT+QCFG="iotopmode"', '+QCFG: "iotopmode",2')
        answer(u, 'AT+QCFG="nwscanmode",3,1')
        answer(u, 'AT+QCFG="iotopmode",0,1')
        answer(u, 'AT+QURCCFG="urcport"', '+QURCCFG: "urcport","uart1"')
        info = await m.init()
        assert info["iccid"] == "8949227002805216770"  # Quectel's F padding dropped
        cmds = written(u)
        assert 'AT+QCFG="nwscanmode",3,1' in cmds and 'AT+QCFG="iotopmode",0,1' in cmds
        assert 'AT+QURCCFG="urcport","uart1"' not in cmds  # already on the UART

    session(Bg96, t, rat="ltem")


def test_configure_applies_a_changed_rat_at_once():
    async def t(m, u):
        answer(u, "AT+CNMP?", "+CNMP: 2")
        answer(u, "AT+CNMP=38")
        await m.configure(apn="other.apn", rat="auto")  # unchanged: nothing sent
        assert u.writes == [] and m.apn == "other.apn"
        await m.configure(rat="lte")
        assert written(u) == ["AT+CNMP?", "AT+CNMP=38"]

    session(Sim7600, t)


def test_a_rat_the_family_lacks_is_skipped():
    async def t(m, u):
        init_script(u, "AT+CICCID", "+ICCID: 1", "+CGMR: X", "A7670E", "AT+CNMP?", "+CNMP: 2")
        await m.init()
        assert not [c for c in written(u) if c.startswith("AT+CNMP=")]

    session(A76xx, t, rat="nbiot")


def test_no_sim_raises_at_once():
    async def t(m, u):
        answer(u, "AT+CPIN?", final="+CME ERROR: 10")
        with raises(SimError) as e:
            await m.check_sim()
        assert e.value.reason == "not inserted" and e.value.code == 10
        assert written(u).count("AT+CPIN?") == 1  # no pointless retries
        assert m.sim == "not inserted"  # the link status says so

    session(Sim7600, t)


def test_sim_busy_after_boot_is_waited_out():
    async def t(m, u):
        # corpus sim7600-boot-mqtt-certdown: "+CME ERROR: SIM busy", then +CPIN: READY
        answer(u, "AT+CPIN?", final="+CME ERROR: SIM busy", times=1)
        answer(u, "AT+CPIN?", final="+CME ERROR: 14", times=1)
        answer(u, "AT+CPIN?", "+CPIN: READY")
        await m.check_sim()
        assert written(u).count("AT+CPIN?") == 3
        assert m.sim == "ready" and m.counters["sim_removals"] == 0

    session(Sim7600, t)


def test_sim_failure_that_lasts_and_a_locked_sim_raise():
    async def t(m, u):
        answer(u, "AT+CPIN?", final="+CME ERROR: SIM failure", times=-1)
        with raises(SimError) as e:
            await m.check_sim()
        assert e.value.reason == "failure"
        u.rules = []
        answer(u, "AT+CPIN?", "+CPIN: SIM PIN")
        with raises(SimError) as e:
            await m.check_sim()
        assert e.value.reason == "SIM PIN" and m.sim == "sim pin"

    session(Bg96, t)


def test_init_without_an_answer_raises_modem_not_responding():
    async def t(m, u):
        with raises(ModemNotResponding):
            await m.init()
        assert written(u).count("AT") >= 3  # it kept asking until its deadline

    session(Sim7600, t, sync_ms=200)


def test_registration_from_answer_and_urc():
    async def t(m, u):
        answer(u, "AT+CEREG?", '+CEREG: 2,5,"1A2B","01C2D3E4",7')
        answer(u, "AT+CGREG?", "+CGREG: 2,0")
        assert await m.wait_registered() == "roaming"
        assert m.registration == "roaming"
        u.inject("\r\n+CEREG: 2\r\n")  # URC: lost the cell, searching
        await u.idle()
        assert m.registration == "searching"
        u.inject('\r\n+CEREG: 1,"1A2B","01C2D3E4",7\r\n')
        await u.idle()
        assert m.registration == "home"
        assert m.counters["registration_changes"] == 3

    session(Sim7600, t)


def test_wait_registered_wakes_on_the_urc():
    async def t(m, u):
        answer(u, "AT+CEREG?", "+CEREG: 2,2")
        answer(u, "AT+CGREG?", "+CGREG: 2,0")

        async def later():
            await sleep_ms(30)
            u.inject("\r\n+CEREG: 5\r\n")

        asyncio.create_task(later())
        assert await m.wait_registered(5000) == "roaming"
        # woken by the URC, not by a poll: the status was read only once
        assert written(u).count("AT+CEREG?") == 1

    session(Bg96, t, reg_poll_ms=3000)


def test_denied_by_urc_while_waiting():
    async def t(m, u):
        answer(u, "AT+CEREG?", "+CEREG: 2,2")
        answer(u, "AT+CGREG?", "+CGREG: 2,0")

        async def later():
            await sleep_ms(30)
            u.inject("\r\n+CEREG: 3\r\n")

        asyncio.create_task(later())
        with raises(RegistrationDenied):
            await m.wait_registered(5000)
        assert m.registration == "denied"

    session(Sim7600, t, reg_poll_ms=3000)


def test_registration_on_gprs_counts_when_lte_is_absent():
    async def t(m, u):
        answer(u, "AT+CEREG?", "+CEREG: 2,0")
        answer(u, "AT+CGREG?", '+CGREG: 2,1,"46C2","AA9A",0')
        assert await m.wait_registered() == "home"

    session(A76xx, t)


def test_denied_raises_and_searching_times_out():
    async def t(m, u):
        answer(u, "AT+CEREG?", "+CEREG: 2,2")
        answer(u, "AT+CGREG?", "+CGREG: 2,2")
        with raises(RegistrationTimeout) as e:
            await m.wait_registered(150)
        assert e.value.state == "searching"
        assert written(u).count("AT+CEREG?") >= 2  # polled in case a URC was lost
        u.rules = []
        answer(u, "AT+CEREG?", "+CEREG: 2,3")
        answer(u, "AT+CGREG?", "+CGREG: 2,0")
        with raises(RegistrationDenied):
            await m.wait_registered(150)

    session(Sim7600, t, reg_poll_ms=40)


def test_signal_operator():
    async def t(m, u):
        answer(u, "AT+CSQ", "+CSQ: 20,99")
        answer(u, "AT+CESQ", "+CESQ: 99,99,255,255,20,45")
        answer(u, "AT+COPS?", '+COPS: 0,0,"Mint",7')
        assert await m.signal() == {"csq": 20, "rssi_dbm": -73, "rsrq_db": -10, "rsrp_dbm": -96}
        assert await m.operator() == {"name": "Mint", "act": 7}
        u.rules = []
        answer(u, "AT+CSQ", "+CSQ: 99,99")
        answer(u, "AT+CESQ", final="ERROR")
        answer(u, "AT+COPS?", "+COPS: 0")
        assert await m.signal() == {"csq": 99, "rssi_dbm": None}
        assert await m.operator() is None

    session(Ec25, t)


def test_an_unexpected_reboot_drops_pdp_and_registration():
    async def t(m, u):
        answer(u, "AT+CEREG?", "+CEREG: 2,1")
        answer(u, "AT+CGREG?", "+CGREG: 2,1")
        await m.wait_registered()
        m.pdp_active = True
        u.inject("\r\nRDY\r\n")  # corpus bg96-reset-powered-down-pdpdeact-rdy
        await u.idle()
        assert not m.pdp_active and m.registration == "unknown"
        assert m.counters["unexpected_resets"] == 1

    session(Bg96, t)


def test_cfun_cycle_turns_the_radio_off_and_on():
    async def t(m, u):
        answer(u, "AT+CFUN=0")
        answer(u, "AT+CFUN=1")
        m.pdp_active = True
        await m.cfun_cycle()
        assert written(u) == ["AT+CFUN=0", "AT+CFUN=1"]
        assert not m.pdp_active and m.counters["cfun_cycles"] == 1

    session(Sim7600, t)


def test_registry_and_options():
    class At:
        def on_urc(self, prefix, handler):
            pass

    assert type(make_modem("SIM7600", At())) is Sim7600
    assert type(make_modem("a7670", At())) is A76xx
    assert type(make_modem("bg95", At(), apn="iot")).__name__ == "Bg95"
    m = make_modem("ec25", At(), boot_ms=1234)
    assert m.boot_ms == 1234 and Ec25.boot_ms != 1234
    with raises(ValueError):
        make_modem("sim800", At())
    with raises(TypeError):
        make_modem("bg96", At(), boot_s=3)  # a typo must not pass silently
