"""The read window's arithmetic: pace in, fetch size and read-ahead out."""

from __future__ import annotations

import pytest

from mlops_async.window import ReadWindow, split


def test_unmeasured_the_window_fetches_what_is_asked_and_nothing_ahead() -> None:
    w = ReadWindow(1.0, 1000)
    assert w.room(0) == 0
    assert w.fetch(0, 2) == (2, 0)


def test_a_fast_caller_gets_full_fetches_and_as_much_again_ahead() -> None:
    w = ReadWindow(1.0, 1000)
    w.observe(0.001, 1000)  # a microsecond per message
    assert w.fetch(0, 2) == (1000, 1000)


def test_a_slow_caller_gets_what_it_asked_for_plus_its_floor() -> None:
    w = ReadWindow(1.0, 1000)
    w.observe(1.0, 2)  # half a second per message: two in the window
    assert w.room(0) == 2 and w.room(1) == 1
    assert w.fetch(0, 2) == (2, 0)
    assert w.fetch(0, 10) == (10, 0)  # a batch and one batch ahead, whatever the pace


def test_slower_takes_effect_at_once_faster_by_halves() -> None:
    w = ReadWindow(1.0, 1000)
    w.observe(0.01, 10)
    w.observe(2.0, 1)  # one message took two seconds
    assert w.pace == 2.0 and w.room(0) == 0
    w.observe(0.0, 10)
    assert w.pace == pytest.approx(1.0)  # halfway back, not all the way


def test_nothing_handed_out_means_one_message_in_hand_all_along() -> None:
    w = ReadWindow(1.0, 1000)
    w.observe(3.0, 0)
    assert w.pace == 3.0


def test_split_caps_the_fetch_and_gives_the_rest_to_the_read_ahead() -> None:
    assert split(0, 1, 500) == (1, 0)
    assert split(300, 64, 500) == (300, 0)
    assert split(900, 64, 500) == (500, 400)
    assert split(5000, 64, 500) == (500, 500)
