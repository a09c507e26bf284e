"""The job view's braille canvas: known points make known characters, axes say min and max."""

from __future__ import annotations

import math

from dragoon.cockpit.app.widgets.plot.braille import cells, dots, draw, framed


def test_the_corners_of_one_cell_are_its_four_corner_dots() -> None:
    # one cell is 2 dots wide, 4 high: (0,0) is dot 1 (0x01), (1,3) is dot 8 (0x80)
    assert draw([(0.0, 1.0), (1.0, 0.0)], 1, 1) == [chr(0x2800 + 0x01 + 0x80)]
    assert draw([(0.0, 0.0), (1.0, 1.0)], 1, 1) == [chr(0x2800 + 0x40 + 0x08)]


def test_points_spread_over_a_wider_canvas() -> None:
    # 2 cells by 1: x 0..3 maps to dot columns 0..3, y 0..3 to rows 3..0 (top is the max)
    lines = draw([(0, 0), (1, 1), (2, 2), (3, 3)], 2, 1)
    assert lines == [chr(0x2800 + 0x40 + 0x20)
                     + chr(0x2800 + 0x02 + 0x08)]


def test_empty_cells_are_blank_and_non_finite_points_are_dropped() -> None:
    assert draw([(math.nan, 1.0), (1.0, math.inf)], 3, 2) == ["   ", "   "]
    assert cells({(5, 7)}, 3, 2) == ["   ", "  " + chr(0x2800 + 0x80)]


def test_a_single_value_range_sits_in_the_middle() -> None:
    assert dots([(2.0, 5.0)], 2, 2) == {(1, 4)}


def test_the_frame_labels_the_axes_with_min_and_max() -> None:
    lines = framed([(1.0, 0.5), (3.0, 2.0)], 20, 5)
    assert lines[0].startswith("  2│") and lines[3].startswith("0.5│")
    assert lines[-1].split("└")[1].split() == ["1", "3"]
    cats = framed([(0.0, 1.0), (1.0, 2.0)], 20, 4, categories=["adam", "sgd"])
    assert cats[-1].split("└")[1].split() == ["adam", "sgd"]
    assert framed([], 20, 4)[-1].endswith("(no values)")


def test_an_x_axis_over_two_decades_is_logarithmic_and_says_so() -> None:
    # 1e-4, 1e-3, 1e-2 on a log scale: the middle point sits in the middle column
    lines = framed([(1e-4, 0.0), (1e-3, 1.0), (1e-2, 0.0)], 31, 5)
    assert lines[-1].split("└")[1].split() == ["0.0001", "0.01", "(log)"]
    canvas = [line.split("│", 1)[1] for line in lines[:-1]]
    top = canvas[0]
    assert top.strip() and top.index(top.strip()) == (len(top) - 1) // 2, canvas
    linear = framed([(1.0, 0.0), (50.0, 1.0)], 12, 5)  # under two decades: linear
    assert "(log)" not in linear[-1]
    assert "(log)" not in framed([(-1.0, 0.0), (1000.0, 1.0)], 12, 5)[-1]  # not all positive
