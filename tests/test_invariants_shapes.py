"""The synthetic shards' shapes have the areas their geometry gives by hand (issue 26 mutation survivor: the star)."""

import math

import numpy as np
import pytest

from pyratok.training.make_shards import _shape_inside

N = 801
GRID = np.linspace(-1, 1, N)
U, V = np.meshgrid(GRID, GRID)
CELL = (2 / (N - 1)) ** 2


@pytest.mark.parametrize(
    ("shape", "area"),
    [
        ("square", 1.44**2),
        ("circle", math.pi * 0.85**2),
        # 10 triangles (centre, tip at radius 1, inner vertex at radius 0.42, 36° apart)
        ("star", 10 * 0.5 * 1.0 * 0.42 * math.sin(math.pi / 5)),
        ("hexagon", 6 * 0.5 * math.sin(math.pi / 3)),  # unit circumradius
        ("triangle", 3 * 0.5 * math.sin(2 * math.pi / 3)),
    ],
)
def test_shape_area(shape, area):
    assert _shape_inside(shape, U, V).sum() * CELL == pytest.approx(area, rel=0.01)


def test_star_and_triangle_point_up():
    # v points down: the tip at (0, -1) is inside (just), the point opposite it at (0, 1) is outside
    assert _shape_inside("star", np.array([0.0]), np.array([-0.99]))[0]
    assert not _shape_inside("star", np.array([0.0]), np.array([0.99]))[0]
    assert _shape_inside("triangle", np.array([0.0]), np.array([-0.99]))[0]
