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
