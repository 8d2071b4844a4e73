# NMEA parser tests; run under CPython (pytest) and the Unix port. Expected values are worked
# out by hand from the sentence text (NMEA 0183: ddmm.mmmm, knots, hhmmss, ddmmyy), never read
# back from the parser; the two classic sentences carry their published checksums.
from tracker.location.nmea import Nmea

GGA = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"
RMC = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"
# 48 deg 07.038' = 48.1173 deg; 11 deg 31.000' = 11.516666.. deg (rounds up to ...667)
LAT = 48117300
LON = 11516667
T_123519 = (12 * 3600 + 35 * 60 + 19) * 1000
UNIX_1994_03_23_123519 = 764426119


def sentence(body):
    """'$' + body + '*' + checksum (XOR of the body's bytes, two upper-case hex digits)."""
    x = 0
    for ch in body.encode():
        x ^= ch
    return ("$%s*%02X\r\n" % (body, x)).encode()


def close(a, b, tol=1e-3):
    # The device's floats are single precision: 545.4 is 545.400024...
    return a is not None and abs(a - b) <= tol


def state(p):
    return (p.mode, p.lat, p.lon, p.alt, p.speed, p.track, p.sats, p.hdop, p.quality, p.date,
            p.tod_ms, p.unix_time())  # fmt: skip


def test_checksum_helper_matches_the_published_sentences():
    assert sentence(GGA[1:-5].decode()) == GGA
    assert sentence(RMC[1:-5].decode()) == RMC


def test_gga_alone():
    p = Nmea()
    assert p.mode == 0 and p.lat is None and p.unix_time() is None and not p.fixed()
    assert p.feed(GGA) == "GGA"
    assert (p.lat, p.lon) == (LAT, LON)
    assert close(p.alt, 545.4) and close(p.hdop, 0.9)
    assert p.sats == 8 and p.quality == 1
    assert p.mode == 3 and p.fixed()  # altitude and 4+ satellites
    assert p.tod_ms == T_123519
    assert p.date is None and p.unix_time() is None  # GGA has no date


def test_rmc_alone_is_2d_with_speed_track_and_date():
    p = Nmea()
    assert p.feed(RMC) == "RMC"
    assert (p.lat, p.lon) == (LAT, LON)
    assert p.mode == 2 and p.alt is None
    assert close(p.speed, 22.4 * 1852 / 3600)  # 11.5236 m/s
    assert close(p.track, 84.4)
    assert p.date == (1994, 3, 23)
    assert p.unix_time() == UNIX_1994_03_23_123519


def test_one_epoch_combines_gga_and_rmc():
    p = Nmea()
    p.feed(GGA)
    p.feed(RMC)
    assert p.mode == 3 and close(p.alt, 545.4) and close(p.track, 84.4) and p.sats == 8
    assert p.unix_time() == UNIX_1994_03_23_123519
    # RMC then GGA of the same second combine the same way
    q = Nmea()
    q.feed(RMC)
    q.feed(GGA)
    assert q.mode == 3 and close(q.alt, 545.4) and close(q.speed, 11.5236)
    assert q.unix_time() == UNIX_1994_03_23_123519


def test_a_new_time_starts_a_new_epoch():
    p = Nmea()
    p.feed(GGA)
    p.feed(RMC)
    # one second later, a GGA without altitude: nothing of the last epoch is kept
    assert p.feed(sentence("GPGGA,123520,4807.039,N,01131.000,E,1,08,0.9,,M,,M,,")) == "GGA"
    assert p.alt is None and p.speed is None and p.track is None
    assert p.lat == 48117317  # 48 + 7.039/60 = 48.11731666..
    assert p.mode == 3  # gpsd's rule: a 3D receiver stays 3D while a sentence lacks altitude
    assert p.unix_time() == UNIX_1994_03_23_123519 + 1  # the date carries over


def test_midnight_rolls_the_date_negative_altitude_south_east():
    p = Nmea()
    p.feed(sentence("GPRMC,235959.50,A,3351.5000,S,15112.2500,E,0.0,,311299,,,A"))
    assert p.date == (1999, 12, 31) and p.unix_time() == 946684799
    assert p.tod_ms == 86399500
    assert p.feed(sentence("GPGGA,000000.50,3351.5000,S,15112.2500,E,1,05,1.2,-12.5,M,20.0,M,,"))
    # 33 deg 51.5' S = -33.858333..; 151 deg 12.25' E = 151.204166..
    assert (p.lat, p.lon) == (-33858333, 151204167)
    assert close(p.alt, -12.5) and p.mode == 3
    assert p.date == (2000, 1, 1) and p.tod_ms == 500 and p.unix_time() == 946684800


def test_two_digit_years_follow_gpsd_century():
    p = Nmea()
    p.feed(sentence("GPRMC,101010,A,4807.038,N,01131.000,E,,,010180,,,A"))
    assert p.date == (1980, 1, 1) and p.unix_time() == 315569410
    p.feed(sentence("GPRMC,101011,A,4807.038,N,01131.000,E,,,010179,,,A"))
    assert p.date == (2079, 1, 1) and p.unix_time() == 3439793411


def test_zda_gives_a_four_digit_date_and_starts_an_epoch():
    p = Nmea()
    assert p.feed(sentence("GPZDA,201530.00,04,07,2002,00,00")) == "ZDA"
    assert p.date == (2002, 7, 4) and p.unix_time() == 1025813730
    assert p.mode == 0 and not p.fixed()
    # a GGA of that second is dated by it
    p.feed(sentence("GPGGA,201530.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"))
    assert p.unix_time() == 1025813730 and p.mode == 3


def test_gns_gll_vtg_gsa():
    p = Nmea()
    gns = "GNGNS,101010.00,5000.000000,N,00000.000030,W,AAN,12,0.8,100.25,47.0,,,S"
    assert p.feed(sentence(gns)) == "GNS"
    # 0.000030' = 0.5 microdegree: half rounds away from zero, west is negative
    assert (p.lat, p.lon) == (50000000, -1)
    assert close(p.alt, 100.25) and p.sats == 12 and close(p.hdop, 0.8) and p.mode == 3
    assert p.feed(sentence("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A")) == "VTG"
    assert close(p.track, 54.7) and close(p.speed, 5.5 * 1852 / 3600)  # 2.8294 m/s
    assert p.feed(sentence("GNGSA,A,3,01,02,03,04,,,,,,,,,1.8,1.0,1.5")) == "GSA"
    assert p.mode == 3 and close(p.hdop, 1.0)
    q = Nmea()
    assert q.feed(sentence("GLGLL,6000.0000,N,02500.0000,E,101011,A,D")) == "GLL"
    assert (q.lat, q.lon, q.mode) == (60000000, 25000000, 2)
    assert q.tod_ms == 36611000 and q.unix_time() is None
    # NMEA 2.x GLL: no mode indicator
    assert q.feed(b"$GPGLL,4916.45,N,12311.12,W,225444,A*31") == "GLL"
    assert (q.lat, q.lon) == (49274167, -123185333)  # 49.274166.., -123.185333..


def test_rounding_below_half_a_microdegree():
    p = Nmea()
    p.feed(sentence("GNGNS,101010.00,0000.000029,S,00000.000029,W,AAN,12,0.8,1.0,0.0,,,"))
    assert (p.lat, p.lon) == (0, 0)  # 0.000029' = 0.4833 microdegree
    p.feed(sentence("GNGNS,101011.00,8959.999999,N,17959.999999,E,AAN,12,0.8,1.0,0.0,,,"))
    assert (p.lat, p.lon) == (90000000, 180000000)  # 59.999999' = 0.9999999833 deg
    p.feed(sentence("GNGNS,101012.00,4500.0000003,N,00059.9999997,E,AAN,12,0.8,1.0,0.0,,,"))
    assert (p.lat, p.lon) == (45000000, 1000000)  # 0.0000003' = 0.005 microdegree


def test_every_talker():
    for talker in ("GP", "GL", "GA", "GB", "BD", "GQ", "GN", "QZ", "II"):
        p = Nmea()
        body = talker + "GGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
        assert p.feed(sentence(body)) == "GGA", talker
        assert (p.lat, p.lon, p.mode) == (LAT, LON, 3), talker


def test_void_fixes():
    p = Nmea()
    p.feed(RMC)
    # GGA quality 0 is "fix not valid", whatever its other fields say
    assert p.feed(sentence("GPGGA,123520,4807.038,N,01131.000,E,0,08,0.9,545.4,M,46.9,M,,"))
    assert p.mode == 1 and not p.fixed() and p.lat is None and p.quality == 0
    q = Nmea()
    q.feed(RMC)
    assert q.feed(sentence("GPRMC,123520,V,4807.038,N,01131.000,E,,,230394,,,N")) == "RMC"
    assert q.mode == 1 and not q.fixed()
    assert q.date == (1994, 3, 23)  # a void RMC's date is not taken (nor dropped)
    # status A but mode indicator N (not valid): void too
    assert q.feed(sentence("GPRMC,123521,A,4807.038,N,01131.000,E,,,230394,,,N")) == "RMC"
    assert q.mode == 1 and not q.fixed()
    r = Nmea()
    assert r.feed(sentence("GNGNS,101010.00,5000.0,N,00000.0,W,NNN,00,,,,,,V")) == "GNS"
    assert r.mode == 1 and not r.fixed()
    # NMEA 4.1 navigational status V: not valid for navigation (gpsd takes no position)
    assert r.feed(sentence("GNGNS,101011.00,5000.0,N,00000.0,W,AAN,09,1.0,5.0,1.0,,,V"))
    assert r.lat is None and not r.fixed()
    # a GLL flagged valid but with FAA mode N (not valid)
    assert r.feed(sentence("GPGLL,4916.45,N,12311.12,W,225444,A,N")) == "GLL"
    assert r.mode == 1 and not r.fixed()
    # VTG with mode N carries nothing
    r.feed(sentence("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,N"))
    assert r.speed is None and r.track is None


def test_fewer_than_three_satellites_is_no_fix():
    p = Nmea()
    p.feed(sentence("GPGGA,123519,4807.038,N,01131.000,E,1,02,0.9,545.4,M,46.9,M,,"))
    assert p.mode == 1 and p.sats == 2


def test_empty_fields():
    p = Nmea()
    assert p.feed(b"$GPGGA,,,,,,0,,,,,,,,*66") == "GGA"
    assert p.mode == 1 and p.lat is None and p.alt is None and p.tod_ms is None
    assert p.feed(b"$GPRMC,,V,,,,,,,,,,N*53") == "RMC"
    assert p.mode == 1 and p.date is None
    assert p.feed(sentence("GPVTG,,T,,M,,N,,K,N")) == "VTG"
    assert p.speed is None


def test_bad_checksum_changes_nothing():
    p = Nmea()
    p.feed(GGA)
    before = state(p)
    bad = RMC.replace(b"*6A", b"*6B")
    assert p.feed(bad) is None
    assert state(p) == before
    assert p.counters["bad_checksum"] == 1
    # a digit changed in transit
    assert p.feed(GGA.replace(b"4807.038", b"4807.039")) is None
    assert state(p) == before and p.counters["bad_checksum"] == 2


def test_checksum_in_lower_case_and_line_endings():
    p = Nmea()
    assert p.feed(b"$GPGLL,4916.45,N,12311.12,W,225444,A*31") == "GLL"
    assert p.feed(b"$GPRMC,205252.00,V,,,,,,,,,,,V*4b") == "RMC"  # Magellan EC-10X
    assert p.feed(RMC[:-2]) == "RMC"  # no CR LF
    assert p.feed(RMC.decode()) == "RMC"  # str
    assert p.feed(bytearray(RMC)) == "RMC"
    assert p.feed(b"$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A*25\n") == "VTG"
    assert p.feed(b"$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A*25".lower()) is None
    assert p.counters["bad_checksum"] == 0


def test_without_checksum_refused_as_gpsd_does():
    p = Nmea()
    assert p.feed(GGA[:-5] + b"\r\n") is None
    assert p.lat is None and p.counters["bad_checksum"] == 1
    # a line cut short by an overrun looks the same
    assert p.feed(b"$GPGGA,123520,4807.038,N") is None
    assert p.counters["bad_checksum"] == 2 and p.lat is None
    # a checksum cut to one digit is malformed
    assert p.feed(GGA[:-3]) is None
    assert p.counters["malformed"] == 1


def test_proprietary_and_unknown_are_ignored_cleanly():
    p = Nmea()
    p.feed(GGA)
    before = state(p)
    assert p.feed(b"$PGRME,15.0,M,45.0,M,25.0,M*1C") is None
    gsv = sentence("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00")
    assert p.feed(gsv) is None
    assert p.feed(b"!AIVDM,1,1,,B,13njCt031t0DA=lN2:jKmad60l1p,0*12") is None
    assert state(p) == before
    assert p.counters["unknown"] == 3


def test_garbage_never_raises():
    p = Nmea()
    junk = [
        b"",
        b"\r\n",
        b"$",
        b"*",
        b"$*",
        b"$GP",
        b"$GPGGA",
        b"$GPGGA*",
        b"$GPGGA*5",
        b"$GPGGA,*ZZ",
        b"\x00\xff\xfe$\x01",
        b"$GPRMC,000346.03,A,4808\x00\x00\x00\x00      \r",
        bytes(range(256)),
        b"$GPGGA," + b"9" * 5000,
        b"," * 300,
        "$GPGGA,\u00e9t\u00e9",
        None,
        12,
        sentence("GPGGA,999999,9999.999,X,99999.999,Y,9,99,9.9,9e9,M,,M,,"),
        sentence("GPRMC,123519,A,9100.000,N,18100.000,E,x,y,320394,,,A"),
        sentence("GPGSA,A,3," + "," * 40),
        sentence("GPZDA,201530.00,32,13,2002,00,00"),
    ]
    for j in junk:
        assert p.feed(j) is None or p.feed(j) in ("GGA", "RMC", "GSA", "ZDA"), j
    assert p.lat is None and p.mode <= 1


def test_counters_add_up():
    p = Nmea()
    for line in (GGA, RMC, RMC.replace(b"*6A", b"*00"), b"$PGRME,15.0,M,45.0,M,25.0,M*1C",
                 b"$GPGGA,1", b"\xff\xfe"):  # fmt: skip
        p.feed(line)
    c = p.counters
    assert c["sentences"] == 6
    assert (c["taken"], c["bad_checksum"], c["unknown"], c["malformed"]) == (2, 2, 1, 1)
