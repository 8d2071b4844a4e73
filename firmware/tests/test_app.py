from tracker import aio
from tracker.app import sync_clock


class FakeBoard:
    def __init__(self):
        self.set_to = None

    def set_time(self, unix_s):
        self.set_to = unix_s


def test_rtc_far_off_the_network_clock_is_set():
    board = FakeBoard()
    network = aio.unix_time() + 3600  # e.g. the RTC still counts from power-on
    sync_clock(board, network)
    assert board.set_to == network


def test_rtc_within_tolerance_is_left_alone():
    board = FakeBoard()
    sync_clock(board, aio.unix_time() + 2)
    assert board.set_to is None


def test_board_without_settable_clock_only_logs():
    sync_clock(object(), aio.unix_time() + 3600)  # no set_time: must not raise


def _tmp_config(text):
    path = "_test_app_config.json"
    with open(path, "w") as f:
        f.write(text)
    return path


def test_host_written_config_is_rewritten_complete_and_canonical():
    from tracker.app import normalise_config
    from tracker.config import Config

    path = _tmp_config('{"interval_s": 5, "device_id": "t1"}')
    try:
        cfg = Config.load(path)
        normalise_config(cfg, path)
        with open(path) as f:
            text = f.read()
        assert text == cfg.text()
        again = Config.load(path)
        assert again["interval_s"] == 5 and again["device_id"] == "t1"
        assert '"store_capacity"' in text  # keys the host left out are there now
    finally:
        import os

        os.remove(path)


def test_a_bad_config_file_is_left_for_inspection():
    from tracker.app import normalise_config
    from tracker.config import Config

    path = _tmp_config("{truncated")
    try:
        cfg = Config.load(path)
        normalise_config(cfg, path)
        with open(path) as f:
            assert f.read() == "{truncated"
    finally:
        import os

        os.remove(path)
