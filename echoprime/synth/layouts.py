"""Chamber layouts of the 11 coarse views, in heart units (see ``canvas.Placement``).

Each layout draws what a sonographer sees in that view, from the *view-filtered* state (the
findings that ``state.VISIBILITY`` does not list for the view are already reset to normal),
so a layout may draw any field without breaking the visibility table. Doppler layouts also
draw colour-flow jets and return their colour box.

Image conventions: apical views show the LV on the right and the atria at the bottom;
parasternal long axis shows the RV outflow at the top, the LV apex to the left and the aorta
and left atrium to the right; the short axis (a composite basal cut, see docs) shows the LV
ring with the mitral orifice inside it, the RV crescent and the aortic valve; subcostal shows
the liver in the near field and the IVC entering the right atrium; suprasternal shows the arch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from echoprime.synth.anatomy import (
    BLOOD,
    CALCIUM,
    DEVICE,
    HEART,
    JET_SCALE,
    LIVER,
    REGURG_SIZE,
    RV_FAC,
    STENOSIS_JET,
    THIN_WALL,
    VALVE,
    Scene,
    Ventricle,
    scale_for,
)
from echoprime.synth.canvas import BLUE, RED, region, segment_dist, unit_vec

# Colour box of a Doppler view: (r0, r1, psi0, psi1): radii in heart units from the apex and
# beam angles in degrees (0 = straight down, positive to the right).
Box = tuple[float, float, float, float]

# Infarct territory -> LV wall angles (0 = apex, positive towards the ventricle's +Q side),
# per view. Each view shows the walls a sonographer sees there; a territory a view does not
# cut (LCx in A2C, RCA in A3C) has no segment in it.
TERRITORIES: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {
    # +Q = lateral wall, -Q = septum
    "A4C": {"LAD": ((-115.0, 45.0),), "RCA": ((-150.0, -115.0),), "LCx": ((60.0, 150.0),)},
    # +Q = anterior wall, -Q = inferior wall
    "A2C": {"LAD": ((-40.0, 150.0),), "RCA": ((-150.0, -40.0),), "LCx": ()},
    # +Q = anteroseptum, -Q = inferolateral wall
    "A3C": {"LAD": ((-30.0, 150.0),), "RCA": (), "LCx": ((-150.0, -30.0),)},
    # short axis, 0 = anterior, +Q = lateral
    "Parasternal_Short": {
        "LAD": ((-110.0, 40.0),),
        "LCx": ((40.0, 140.0),),
        "RCA": ((140.0, 180.0), (-180.0, -110.0)),
    },
}


def _deg(du: float, dv: float) -> float:
    return math.degrees(math.atan2(dv, du))


def _lv(
    sc: Scene, view: str, base, apex_deg: float, a: float, b: float, *, gap: float | None = 30.0, anchor=0.6
) -> Ventricle:
    """The left ventricle of a view, sized and moved by the state."""
    s = sc.s
    k = scale_for(s.lv_size)
    if s.amyloidosis:
        k *= 0.8  # small cavity
    wall = 0.085 if s.amyloidosis else 0.034
    akinetic = TERRITORIES.get(view, {}).get(s.stemi_territory or "", ()) if s.stemi else ()
    if anchor == 0.0:  # concentric (short axis): the base is the centre
        centre = np.asarray(base, dtype=float)
    else:
        centre = np.asarray(base, dtype=float) + (a * k) * unit_vec(apex_deg)
    lv = sc.ventricle(
        centre, apex_deg, a * k, b * k, fac=s.ef / 100.0, wall=wall, anchor=anchor, gap_deg=gap,
        akinetic=akinetic, amyloid=s.amyloidosis,
    )  # fmt: skip
    sc.lv_area = lv.area
    return lv


def _rv(sc: Scene, base, apex_deg: float, a: float, b: float, gap: float | None = 30.0) -> Ventricle:
    k = scale_for(sc.s.rv_size)
    centre = np.asarray(base, dtype=float) + (a * k) * unit_vec(apex_deg)
    return sc.ventricle(
        centre,
        apex_deg,
        a * k,
        b * k,
        fac=RV_FAC[sc.s.rv_function],
        wall=0.018,
        gap_deg=gap,
        wall_level=THIN_WALL,
    )


def _atrium(
    sc: Scene, top, a: float, b: float, grade: int, grow_deg: float = 90.0
) -> tuple[np.ndarray, float, float]:
    """An atrium hanging from ``top`` (the valve plane), growing away from it with ``grade``."""
    k = scale_for(grade)
    c = np.asarray(top, dtype=float) + (b * k + 0.02) * unit_vec(grow_deg)
    sc.chamber(c, a * k, b * k)
    return c, a * k, b * k


def _mid(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (np.asarray(p, dtype=float) + np.asarray(q, dtype=float)) / 2


def _ed(v: Ventricle, alpha: float) -> np.ndarray:
    """End-diastolic position of a wall point (static anchors for devices and calcium)."""
    rel = (v.pc + v.a * math.cos(math.radians(alpha))) * v.axis + v.b * math.sin(math.radians(alpha)) * v.perp
    return v.anchor + rel


def _stent(sc: Scene, root, d_deg: float, radius: float) -> None:
    """A TAVR frame at the aortic annulus: two bright struts along the walls and a lattice."""
    d, n = unit_vec(d_deg), unit_vec(d_deg + 90)
    root = np.asarray(root, dtype=float)
    p0, p1 = root - 0.03 * d, root + 0.12 * d
    for side in (-1, 1):
        off = side * (radius + 0.006) * n
        sc.line([p0 + off, p1 + off], 0.011, DEVICE)
    for t in (0.0, 0.05, 0.1):
        sc.line([p0 + t * d - radius * n, p0 + (t + 0.05) * d + radius * n], 0.006, DEVICE)


def _impella(sc: Scene, path) -> None:
    sc.line(path, 0.013, DEVICE)
    sc.blob(path[-1], 0.022, 0.022, DEVICE)


def _mitral(sc: Scene, h1, h2, open_deg: float, lv_axis_deg: float) -> np.ndarray:
    """Mitral leaflets plus the MitraClip and annular calcium where the state has them."""
    s = sc.s
    sc.leaflets(h1, h2, open_deg, sc.cyc.mv_open, stenosis=s.ms)
    ed = int(np.argmin(sc.cyc.contraction))  # devices and calcium sit where the annulus is at end-diastole
    e1, e2 = (np.asarray(h)[ed] if np.ndim(h) == 2 else np.asarray(h, dtype=float) for h in (h1, h2))
    coapt = _mid(e1, e2)
    if s.mitraclip:
        sc.blob(coapt + 0.04 * unit_vec(lv_axis_deg), 0.06, 0.03, DEVICE, lv_axis_deg)
    if s.mac:
        sc.blob(e1 - 0.015 * unit_vec(lv_axis_deg), 0.055, 0.034, CALCIUM, lv_axis_deg)
    return coapt


def _av(sc: Scene, root, d_deg: float, radius: float) -> None:
    """Aortic leaflets across the root (``d_deg`` points into the aorta)."""
    n = unit_vec(d_deg + 90)
    root = np.asarray(root, dtype=float)
    sc.leaflets(root - radius * n, root + radius * n, d_deg, sc.cyc.av_open, stenosis=sc.s.as_, thick=0.009)


def _lesion_jet(
    sc: Scene, sizes, grade: int, origin, d_deg: float, length: float, width: float, gate, code: int
) -> None:
    """The colour jet of a lesion of ``grade``: ``sizes[grade]`` of a chamber ``length x width``.

    ``sizes`` is ``REGURG_SIZE`` (regurgitation) or ``STENOSIS_JET`` (flow through a stenosis).
    """
    fl, fw = sizes[grade]
    sc.jet(origin, d_deg, JET_SCALE * fl * length, JET_SCALE * fw * width, gate, code)


def _pasp(sc: Scene, origin, d_deg: float) -> None:
    """TR peak velocity cue: an aliasing core whose length grows with the PA pressure."""
    frac = min(max((sc.s.pasp - 15) / 75.0, 0.0), 1.0)
    sc.velocity_core(origin, d_deg, 0.06 + 0.4 * frac, 0.045, sc.cyc.systole)


# -- apical views --------------------------------------------------------------------------
def _apical4(sc: Scene, view: str, *, five: bool) -> dict:
    s = sc.s
    sc.envelope((0.0, 0.52), 0.41, 0.45)
    rv = _rv(sc, (-0.15, 0.64), _deg(0.3, -1.0), 0.2, 0.085)
    lv = _lv(sc, view, (0.13, 0.65), _deg(-0.2, -1.0), 0.23, 0.12)
    la_top, ra_top = (0.2, 0.67) if five else (0.13, 0.67), (-0.2, 0.67) if five else (-0.15, 0.67)
    la = _atrium(sc, la_top, 0.12 if five else 0.125, 0.1, s.la_size)
    ra = _atrium(sc, ra_top, 0.1, 0.1, s.ra_size)
    tv = (rv.point(-150.0), rv.point(150.0))
    sc.leaflets(*tv, _deg(0.3, -1.0), sc.cyc.mv_open, stenosis=s.ts)
    out = {"lv": lv, "la": la, "ra": ra, "tv_mid": _mid(_ed(rv, -150.0), _ed(rv, 150.0))}
    if five:
        # the LV outflow tract leaves the septal side of the base; the aorta runs down
        # between the atria
        root = _ed(lv, -165.0) + np.array([0.0, 0.035])
        end = np.array([-0.03, 1.02])
        d = _deg(*(end - root))
        sc.tube(root, end, 0.048)
        _av(sc, root, d, 0.048)
        out.update(root=root, aorta_deg=d)
        mv = (lv.point(150.0), lv.point(178.0))
        if s.tavr:
            _stent(sc, root, d, 0.048)
        if s.impella:
            _impella(sc, [end, root, _ed(lv, 0.0) + np.array([0.0, 0.15])])
    else:
        mv = (lv.point(150.0), lv.point(-150.0))
    out["mv_mid"] = _mitral(sc, mv[0], mv[1], _deg(-0.2, -1.0), _deg(-0.2, -1.0))
    if s.pacemaker:
        tip = _ed(rv, 0.0) + np.array([0.0, 0.04])
        sc.line([np.array([-0.24, 0.98]), out["tv_mid"], tip], 0.014, DEVICE)
    return out


def a4c(sc: Scene) -> None:
    _apical4(sc, "A4C", five=False)


def a5c(sc: Scene) -> None:
    _apical4(sc, "A5C", five=True)


def a2c(sc: Scene) -> None:
    s = sc.s
    sc.envelope((0.0, 0.5), 0.32, 0.47)
    lv = _lv(sc, "A2C", (0.02, 0.65), -90.0, 0.23, 0.12)
    _atrium(sc, (0.02, 0.67), 0.125, 0.1, s.la_size)
    _mitral(sc, lv.point(-150.0), lv.point(150.0), -90.0, -90.0)


def a3c(sc: Scene) -> None:
    s = sc.s
    sc.envelope((0.04, 0.5), 0.37, 0.47)
    ax = _deg(-0.1, -1.0)
    lv = _lv(sc, "A3C", (0.0, 0.65), ax, 0.23, 0.12, gap=45.0)
    _atrium(sc, (-0.07, 0.67), 0.11, 0.095, s.la_size)
    root = _ed(lv, 150.0) + np.array([0.03, 0.02])
    d = _deg(0.45, 1.0)
    sc.tube(root, root + 0.4 * unit_vec(d), 0.05)
    _av(sc, root, d, 0.05)
    _mitral(sc, lv.point(-140.0), lv.point(178.0), ax, ax)
    if s.impella:
        _impella(sc, [root + 0.38 * unit_vec(d), root, _ed(lv, 0.0) + np.array([0.0, 0.16])])


def apical_doppler(sc: Scene) -> Box:
    s, cyc = sc.s, sc.cyc
    g = _apical4(sc, "Apical_Doppler", five=True)
    (la_c, la_a, la_b), (ra_c, ra_a, ra_b) = g["la"], g["ra"]
    mv, tv, root, ao = g["mv_mid"], g["tv_mid"], g["root"], g["aorta_deg"]
    ax = _deg(-0.2, -1.0)
    # normal flow: diastolic inflow towards the transducer, systolic outflow away from it
    sc.jet(mv, ax, 0.3, 0.1, cyc.mv_open, RED, core=None)
    sc.jet(root - 0.1 * unit_vec(ao), ao, 0.22, 0.06, cyc.ejection, BLUE, core=None)
    _lesion_jet(sc, STENOSIS_JET, s.ms, mv, ax, 0.42, 0.16, cyc.mv_open, RED)
    _lesion_jet(sc, STENOSIS_JET, s.as_, root, ao, 0.32, 0.12, cyc.ejection, BLUE)
    _lesion_jet(sc, REGURG_SIZE, s.mr, mv, _deg(*(la_c - mv)), 2 * la_b * 1.15, 2 * la_a, cyc.systole, BLUE)
    _lesion_jet(sc, REGURG_SIZE, s.ar, root, ax, 0.42, 0.18, cyc.diastole, RED)
    _lesion_jet(sc, REGURG_SIZE, s.tr, tv, _deg(*(ra_c - tv)), 2 * ra_b * 1.15, 2 * ra_a, cyc.systole, BLUE)
    _pasp(sc, tv, _deg(*(ra_c - tv)))
    return (0.38, 1.02, -30.0, 30.0)


# -- parasternal views ----------------------------------------------------------------------
def _plax(sc: Scene) -> dict:
    s = sc.s
    sc.envelope((0.0, 0.54), 0.52, 0.33)
    sc.chamber((-0.02, 0.3), 0.32, 0.065)  # RV outflow
    lv = _lv(sc, "Parasternal_Long", (0.15, 0.57), 175.0, 0.3, 0.11, gap=40.0)
    r = 0.05 * (1.0 + 0.2 * s.aortic_root)
    root = np.array([0.18, 0.46])
    d = _deg(0.33, -0.05)
    sc.tube(root, root + 0.38 * unit_vec(d), r)
    la = _atrium(sc, (0.32, 0.53 + r), 0.13, 0.09, s.la_size)
    sc.chamber((0.22, 0.82), 0.03, 0.03)  # descending aorta
    _av(sc, root, d, r)
    ant = root + np.array([0.0, r + 0.02])
    mv = _mitral(sc, lv.point(-140.0), ant, 175.0, 175.0)
    if s.tavr:
        _stent(sc, root, d, r)
    if s.impella:
        _impella(sc, [root + 0.36 * unit_vec(d), root, _ed(lv, 0.0) + np.array([0.2, 0.0])])
    return {"lv": lv, "la": la, "root": root, "mv": mv, "aorta_deg": d}


def plax(sc: Scene) -> None:
    _plax(sc)


def doppler_plax(sc: Scene) -> Box:
    s, cyc = sc.s, sc.cyc
    g = _plax(sc)
    (la_c, la_a, la_b), mv, root = g["la"], g["mv"], g["root"]
    sc.jet(root + np.array([-0.16, 0.04]), g["aorta_deg"], 0.18, 0.06, cyc.ejection, BLUE, core=None)
    sc.jet(mv, 175.0, 0.25, 0.09, cyc.mv_open, RED, core=None)
    _lesion_jet(sc, REGURG_SIZE, s.mr, mv, _deg(*(la_c - mv)), 2 * la_b * 1.3, 2 * la_a, cyc.systole, BLUE)
    _lesion_jet(sc, REGURG_SIZE, s.ar, root, 185.0, 0.36, 0.14, cyc.diastole, RED)
    return (0.3, 0.92, -12.0, 38.0)


def _aortic_cusps(sc: Scene, centre, r: float, bicuspid: bool, tavr: bool) -> None:
    """Aortic valve en face: root ring, cusps closing to a Y (or a line when bicuspid)."""
    sc.chamber(centre, r, r, wall=0.02)
    if tavr:
        reg = region(sc.pl, tuple(centre), 0.0, r + 0.05, r + 0.05)
        if reg is not None:
            rad = np.hypot(reg.P, reg.Q)
            lattice = np.cos(8 * np.arctan2(reg.Q, reg.P)) > -0.3
            sc.p.paint(reg, (rad > r + 0.012) & (rad < r + 0.04) & lattice, DEVICE)
    angles = (180.0, 0.0) if bicuspid else (-90.0, 30.0, 150.0)
    length = (r * (1.0 - 0.8 * sc.cyc.av_open))[:, None]  # F x 1
    c = np.asarray(centre, dtype=float)
    for a in angles:
        rim = c + r * unit_vec(a)
        tip = rim[None, :] - length * unit_vec(a)[None, :]
        reg, dist = segment_dist(sc.pl, np.broadcast_to(rim, tip.shape), tip, 0.01)
        if reg is not None:
            sc.p.paint(reg, dist < 0.01, VALVE)


def psax(sc: Scene) -> None:
    s, cyc = sc.s, sc.cyc
    lv_c = np.array([-0.05, 0.63])
    sc.envelope((-0.02, 0.6), 0.4, 0.33)
    _rv(sc, (0.02, 0.47), 200.0, 0.22, 0.1, gap=None)  # painted first: the LV cuts it to a crescent
    lv = _lv(sc, "Parasternal_Short", lv_c, -90.0, 0.15, 0.15, gap=None, anchor=0.0)
    # mitral orifice ("fish mouth") inside the LV: opens in diastole, less when stenotic
    reg = region(sc.pl, tuple(lv_c + np.array([0.0, 0.02])), 0.0, 0.1, 0.07)
    if reg is not None:
        half_w = 0.085 * lv.scale[:, None, None] ** 0.5
        half_h = 0.012 + 0.05 * (cyc.mv_open * (1.0 - 0.28 * s.ms))[:, None, None]
        t = 0.012 * (1.0 + 0.9 * s.ms)
        rho = (reg.P[None] / half_w) ** 2 + (reg.Q[None] / half_h) ** 2
        rho_out = (reg.P[None] / (half_w + t)) ** 2 + (reg.Q[None] / (half_h + t)) ** 2
        sc.p.paint(reg, (rho_out < 1) & (rho >= 1), VALVE + 0.3 * s.ms)
    if s.mac:  # calcified posterior annulus: a bright arc under the LV
        reg = region(sc.pl, tuple(lv_c), 0.0, 0.3, 0.3)
        if reg is not None:
            rad = np.hypot(reg.P, reg.Q)
            r0 = 0.15 * scale_for(s.lv_size) + 0.05
            ang = np.degrees(np.arctan2(reg.Q, reg.P))
            sc.p.paint(reg, (rad > r0) & (rad < r0 + 0.035) & (ang > 50) & (ang < 130), CALCIUM)
    _aortic_cusps(sc, (0.17, 0.44), 0.065, s.bicuspid, s.tavr)


def doppler_psax(sc: Scene) -> Box:
    s, cyc = sc.s, sc.cyc
    sc.envelope((0.0, 0.5), 0.43, 0.38)
    rvot = np.array([-0.04, 0.33])
    sc.chamber(rvot, 0.29, 0.07, axis_deg=-8.0)  # RV inflow and outflow
    sc.chamber((0.03, 0.74), 0.17, 0.075)  # LA
    ra_c = np.array([-0.27, 0.6])
    sc.chamber(ra_c, 0.095, 0.11)
    pv = np.array([0.23, 0.3])
    pa_deg = _deg(0.3, 1.0)
    sc.tube(pv, pv + 0.32 * unit_vec(pa_deg), 0.045)
    _aortic_cusps(sc, (0.0, 0.52), 0.075, False, False)
    tv1, tv2 = np.array([-0.34, 0.46]), np.array([-0.2, 0.47])
    sc.leaflets(tv1, tv2, -80.0, cyc.mv_open, stenosis=s.ts)
    n = unit_vec(pa_deg + 90)
    sc.leaflets(pv - 0.045 * n, pv + 0.045 * n, pa_deg, cyc.av_open, thick=0.008)
    tv = _mid(tv1, tv2)
    sc.jet(pv, pa_deg, 0.22, 0.07, cyc.ejection, BLUE, core=None)
    sc.jet(tv, -80.0, 0.16, 0.08, cyc.mv_open, RED, core=None)
    to_ra = _deg(*(ra_c - tv))
    _lesion_jet(sc, REGURG_SIZE, s.tr, tv, to_ra, 0.25, 0.2, cyc.systole, BLUE)
    _lesion_jet(sc, STENOSIS_JET, s.ts, tv, -80.0, 0.22, 0.12, cyc.mv_open, RED)
    _lesion_jet(sc, REGURG_SIZE, s.pr, pv, _deg(*(rvot - pv)), 0.3, 0.11, cyc.diastole, RED)
    _pasp(sc, tv, to_ra)
    return (0.2, 0.86, -40.0, 40.0)


# -- subcostal and suprasternal -------------------------------------------------------------
def subcostal(sc: Scene) -> None:
    s, cyc = sc.s, sc.cyc
    sc.blob((-0.22, 0.16), 0.58, 0.3, LIVER, 15.0)
    sc.envelope((0.04, 0.6), 0.4, 0.27, -20.0)
    ra_k = scale_for(s.ra_size)
    ra_c = np.array([-0.1 - 0.1 * ra_k, 0.5])
    sc.chamber(ra_c, 0.1 * ra_k, 0.085 * ra_k)
    sc.chamber((-0.12, 0.73), 0.09, 0.07)  # LA
    sc.line([np.array([-0.23, 0.615]), np.array([-0.03, 0.61])], 0.012, THIN_WALL + 0.25)  # septum
    if s.pfo:
        sc.line([np.array([-0.15, 0.6]), np.array([-0.11, 0.625])], 0.014, BLOOD)
    rv = _rv(sc, (-0.05, 0.46), -15.0, 0.19, 0.075)
    _lv(sc, "Subcostal", (0.0, 0.67), -25.0, 0.22, 0.11)
    sc.leaflets(rv.point(-150.0), rv.point(150.0), -15.0, cyc.mv_open)
    # IVC: wide and barely collapsing with inspiration when dilated
    r0, collapse = (0.06, 0.08) if s.ivc_dilated else (0.032, 0.5)
    radius = (r0 * (1.0 - collapse * cyc.resp))[:, None, None]  # F x 1 x 1
    # the IVC comes up through the liver from the lower left into the RA
    p0, p1 = np.array([-0.4, 0.85]), ra_c + np.array([-0.03 * ra_k, 0.06 * ra_k])
    reg, d = segment_dist(sc.pl, p0, p1, r0 + 0.02)
    if reg is not None:
        sc.p.paint(reg, d[None] < radius + 0.016, THIN_WALL + 0.15)
        sc.p.paint(reg, d[None] < radius, BLOOD)
    if s.pacemaker:
        sc.line([np.array([-0.34, 0.4]), _ed(rv, 175.0), _ed(rv, 0.0)], 0.014, DEVICE)


def ssn(sc: Scene) -> None:
    s = sc.s
    c = np.array([0.0, 0.62])
    r_in = 0.2
    widen = 0.028 * s.aortic_root
    reg = region(sc.pl, tuple(c), 0.0, 0.42, 0.42)
    if reg is not None:
        rad = np.hypot(reg.P, reg.Q)
        # lumen width grows towards the ascending (left) limb when the root is dilated
        w = 0.075 + widen * np.clip(-reg.P / 0.25, 0.0, 1.0)
        upper = reg.Q < 0.01
        sc.p.paint(reg, upper & (rad > r_in - 0.016) & (rad < r_in + w + 0.016), THIN_WALL + 0.2)
        sc.p.paint(reg, upper & (rad > r_in) & (rad < r_in + w), BLOOD)
    asc = 0.075 + widen
    sc.tube(c + np.array([-(r_in + asc / 2), 0.0]), c + np.array([-(r_in + asc / 2) + 0.02, 0.36]), asc / 2)
    sc.tube(c + np.array([r_in + 0.0375, 0.0]), c + np.array([r_in + 0.06, 0.36]), 0.0375)
    for a in (-125.0, -95.0, -65.0):
        sc.tube(c + (r_in + 0.09) * unit_vec(a), c + (r_in + 0.22) * unit_vec(a), 0.02)
    sc.chamber(c + np.array([0.0, 0.03]), 0.09, 0.05)  # right pulmonary artery
    sc.blob(c + np.array([0.0, 0.22]), 0.16, 0.09, HEART)  # left atrium roof, far field
    sc.blob(c + np.array([0.0, 0.22]), 0.12, 0.06, BLOOD)


LAYOUTS: dict[str, Callable[[Scene], Box | None]] = {
    "A2C": a2c,
    "A3C": a3c,
    "A4C": a4c,
    "A5C": a5c,
    "Apical_Doppler": apical_doppler,
    "Doppler_Parasternal_Long": doppler_plax,
    "Doppler_Parasternal_Short": doppler_psax,
    "Parasternal_Long": plax,
    "Parasternal_Short": psax,
    "SSN": ssn,
    "Subcostal": subcostal,
}
