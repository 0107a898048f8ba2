"""The triangle rasterizer: coverage, barycentrics, depth test, culling, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from minerf_cli import raster

# On screen (y down), (0,0) -> (0,4) -> (4,0) is counter-clockwise: a front face.
FRONT = np.array([[0, 1, 2]])


def tri_px(points, depth=1.0):
    """(3, 3) [x, y, depth] from three (x, y) points."""
    p = np.asarray(points, np.float64)
    return np.concatenate([p, np.full((len(p), 1), depth)], 1)


def test_one_triangle_covers_the_pixel_centres_inside_it():
    v = tri_px([(0, 0), (0, 4), (4, 0)])
    tid, bary = raster.rasterize(v, FRONT, 6, 6, perspective=False)
    # centres (j + 0.5, i + 0.5) with x + y <= 4  <=>  i + j <= 3 (the hypotenuse counts)
    i, j = np.mgrid[:6, :6]
    expected = i + j <= 3
    assert np.array_equal(tid >= 0, expected)
    assert (tid[expected] == 0).all() and (tid[~expected] == -1).all()
    assert (bary[~expected] == 0).all()


def test_barycentrics_are_exact_at_pixel_centres():
    v = tri_px([(0, 0), (0, 4), (4, 0)])
    tid, bary = raster.rasterize(v, FRONT, 6, 6, perspective=False)
    # p = l0 v0 + l1 v1 + l2 v2  ->  x = 4 l2, y = 4 l1
    for i, j in zip(*np.nonzero(tid >= 0)):
        x, y = j + 0.5, i + 0.5
        np.testing.assert_allclose(bary[i, j], [1 - (x + y) / 4, y / 4, x / 4], atol=1e-6)
    np.testing.assert_allclose(bary[1, 1], [0.25, 0.375, 0.375], atol=1e-6)  # centre (1.5, 1.5)
    np.testing.assert_allclose(bary[1, 2], [0.0, 0.375, 0.625], atol=1e-6)  # on the hypotenuse


def test_back_faces_are_culled_unless_asked():
    v = tri_px([(0, 0), (4, 0), (0, 4)])  # clockwise on screen
    tid, _ = raster.rasterize(v, FRONT, 6, 6)
    assert (tid == -1).all()
    tid, bary = raster.rasterize(v, FRONT, 6, 6, cull_backfaces=False, perspective=False)
    assert (tid >= 0).sum() == 10
    np.testing.assert_allclose(bary[0, 0], [0.75, 0.125, 0.125], atol=1e-6)  # x = 4 l1, y = 4 l2


@pytest.mark.parametrize("near_first", [True, False])
def test_z_buffer_keeps_the_nearer_triangle(near_first):
    big = [(-1, -1), (-1, 9), (9, -1)]
    small = [(1, 1), (1, 4), (4, 1)]
    near, far = tri_px(small, 2.0), tri_px(big, 5.0)
    v = np.concatenate([near, far] if near_first else [far, near])
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    tid, _ = raster.rasterize(v, tris, 8, 8)
    near_id = 0 if near_first else 1
    # the small triangle's centres: x, y >= 1 and x + y <= 5
    i, j = np.mgrid[:8, :8]
    x, y = j + 0.5, i + 0.5
    inside_small = (x >= 1) & (y >= 1) & (x + y <= 5)
    inside_big = x + y <= 8
    assert (tid[inside_small] == near_id).all()
    assert (tid[inside_big & ~inside_small] == 1 - near_id).all()
    # the far one in front now
    v2 = v.copy()
    v2[:, 2] = np.where(v2[:, 2] == 2.0, 7.0, v2[:, 2])
    tid2, _ = raster.rasterize(v2, tris, 8, 8)
    assert (tid2[inside_big] == 1 - near_id).all()


def test_shared_edge_is_watertight_and_ties_are_deterministic():
    # a 4x4 square split along its diagonal, which passes through pixel centres
    v = tri_px([(0, 0), (0, 4), (4, 4), (4, 0)])
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    tid, bary = raster.rasterize(v, tris, 6, 6, perspective=False)
    assert (tid[:4, :4] >= 0).all() and (tid[4:, :] == -1).all() and (tid[:, 4:] == -1).all()
    assert (np.diag(tid[:4, :4]) == 0).all()  # equal depth on the shared edge: the lower index
    np.testing.assert_allclose(bary.sum(-1)[:4, :4], 1.0, atol=1e-6)


def test_many_triangles_sharing_vertices_leave_no_holes():
    # a finely tessellated rectangle with irrational-looking vertex positions
    rng = np.random.default_rng(0)
    n = 13
    ys, xs = np.mgrid[:n, :n].astype(np.float64)
    pts = np.stack([3.1 + xs * 4.37, 2.3 + ys * 3.91], -1)
    pts[1:-1, 1:-1] += rng.uniform(-1, 1, (n - 2, n - 2, 2))
    v = np.concatenate([pts.reshape(-1, 2), np.ones((n * n, 1))], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    tid, _ = raster.rasterize(v, tris, 64, 64)
    x0, x1 = 3.1, 3.1 + (n - 1) * 4.37
    y0, y1 = 2.3, 2.3 + (n - 1) * 3.91
    cx, cy = np.arange(64) + 0.5, np.arange(64) + 0.5
    inside = ((cy > y0) & (cy < y1))[:, None] & ((cx > x0) & (cx < x1))[None, :]
    assert (tid[inside] >= 0).all()
    assert (tid[~inside] == -1).all()


def test_matches_a_per_triangle_reference():
    rng = np.random.default_rng(1)
    T, H, W = 40, 24, 32
    v = np.concatenate([rng.uniform(-4, 36, (3 * T, 2)), rng.uniform(1, 10, (3 * T, 1))], 1)
    tris = np.arange(3 * T).reshape(T, 3)
    tid, bary = raster.rasterize(v, tris, H, W, cull_backfaces=False)
    best = np.full((H, W), np.inf)
    ref = np.full((H, W), -1)
    i, j = np.mgrid[:H, :W]
    px, py = j + 0.5, i + 0.5
    for t in range(T):
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = v[tris[t]]
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        l0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) / area
        l1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) / area
        l2 = 1 - l0 - l1
        inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        z = 1 / (l0 / z0 + l1 / z1 + l2 / z2)
        win = inside & (z < best)
        best[win], ref[win] = z[win], t
    assert np.array_equal(tid, ref)
    # barycentrics reproduce the pixel centre and are perspective-correct
    cov = tid >= 0
    b = bary[cov].astype(np.float64)
    t = tid[cov]
    xy1 = np.concatenate([v[:, :2] * v[:, 2:], v[:, 2:]], 1)  # homogeneous camera-like points
    cam = raster.interpolate_at(xy1, tris, t, b)
    np.testing.assert_allclose(cam[:, 0] / cam[:, 2], px[cov], atol=1e-4)
    np.testing.assert_allclose(cam[:, 1] / cam[:, 2], py[cov], atol=1e-4)


def test_project_and_back_project_through_the_pixel_centre():
    K = np.array([[100.0, 0, 16], [0, 100.0, 12], [0, 0, 1]])
    cam = np.array([[-0.1, -0.1, 2.0], [-0.1, 0.1, 1.0], [0.1, -0.1, 3.0]])  # tilted in depth
    px = raster.project(cam, K)
    np.testing.assert_allclose(px[0], [100 * -0.1 / 2 + 16, 100 * -0.1 / 2 + 12, 2.0])
    tid, bary = raster.rasterize(px, np.array([[0, 1, 2]]), 24, 32, cull_backfaces=False)
    cov = np.argwhere(tid >= 0)
    assert len(cov) > 20
    p3 = raster.interpolate(cam, np.array([[0, 1, 2]]), tid, bary)[tid >= 0]  # 3D points on the triangle
    back = raster.project(p3, K)
    np.testing.assert_allclose(back[:, 0], cov[:, 1] + 0.5, atol=1e-4)
    np.testing.assert_allclose(back[:, 1], cov[:, 0] + 0.5, atol=1e-4)


def test_barycentric_at_arbitrary_points():
    v = tri_px([(0, 0), (0, 4), (4, 0)], 2.0)
    b = raster.barycentric_at(v, FRONT, np.array([0, 0]), np.array([[1.0, 1.0], [5.0, 1.0]]))
    np.testing.assert_allclose(b[0], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(b[1], [-0.5, 0.25, 1.25])  # outside: negative, not clamped


def test_interpolate_fills_empty_pixels_with_zero():
    v = tri_px([(0, 0), (0, 4), (4, 0)])
    tid, bary = raster.rasterize(v, FRONT, 6, 6, perspective=False)
    attr = np.array([[0.0, 1.0], [0.0, 1.0], [4.0, 1.0]])  # x coordinate, constant 1
    out = raster.interpolate(attr, FRONT, tid, bary)
    assert out.shape == (6, 6, 2)
    cov = tid >= 0
    np.testing.assert_allclose(out[cov, 0], (np.nonzero(cov)[1] + 0.5), atol=1e-5)
    np.testing.assert_allclose(out[cov, 1], 1.0, atol=1e-6)
    assert (out[~cov] == 0).all()
    assert raster.interpolate(attr[:, 0], FRONT, tid, bary).shape == (6, 6)


def test_degenerate_offscreen_and_behind_camera_triangles_draw_nothing():
    v = np.array([[1, 1, 1], [2, 2, 1], [3, 3, 1],  # zero area
                  [-9, -9, 1], [-9, -5, 1], [-5, -9, 1],  # off screen
                  [0, 0, -1], [0, 4, -1], [4, 0, -1]], np.float64)  # behind the camera
    tid, _ = raster.rasterize(v, np.arange(9).reshape(3, 3), 6, 6)
    assert (tid == -1).all()
    tid, _ = raster.rasterize(v, np.zeros((0, 3), int), 6, 6)
    assert (tid == -1).all()


def test_large_triangle_covers_the_whole_image():
    v = tri_px([(-10, -10), (-10, 100), (100, -10)])
    tid, _ = raster.rasterize(v, FRONT, 40, 50)
    assert (tid == 0).all()
