"""The synthetic renderer: findings only where VISIBILITY says, EF moves the LV, masks are exact."""

from __future__ import annotations

import numpy as np
import pytest

from echoprime.synth.render import frame_width, render_video, visible_state
from echoprime.synth.state import VISIBILITY, PatientState, sample_state
from echoprime.taxonomy import DOPPLER_VIEWS, VIEWS

# A clearly abnormal value of every finding of the visibility table.
POSITIVE = {
    "ef": 25,
    "lv_size": 3,
    "amyloidosis": True,
    "impella": True,
    "rv_size": 3,
    "rv_function": 3,
    "pacemaker": True,
    "la_size": 3,
    "ra_size": 3,
    "pfo": True,
    "mitraclip": True,
    "mac": True,
    "ms": 3,
    "mr": 4,
    "tavr": True,
    "bicuspid": True,
    "as_": 3,
    "ar": 4,
    "ts": 3,
    "tr": 4,
    "pr": 4,
    "effusion": 4,
    "aortic_root": 3,
    "ivc_dilated": True,
    "pasp": 70,
}
# 12 frames at 10 fps and 70 bpm span 1.4 cardiac cycles: every systolic and diastolic sign shows.
SMALL = dict(frames=12, size=64, fps=10)


def _render(state: PatientState, view: str, seed: int = 7, **kw):
    return render_video(state, view, np.random.default_rng([seed, VIEWS.index(view)]), **{**SMALL, **kw})


@pytest.fixture(scope="module")
def normal_videos():
    return {v: _render(PatientState("P", "S"), v) for v in VIEWS}


def _changed_views(state: PatientState, normal_videos) -> list[str]:
    changed = []
    for v in VIEWS:
        vid = _render(state, v)
        diff = (vid.frames != normal_videos[v].frames).any(axis=(0, 3))
        # a finding never touches the annotations or anything else outside the fan
        assert not (diff & ~vid.sector_mask).any(), f"{v}: pixels outside the fan changed"
        if diff.any():
            changed.append(v)
    return changed


def test_every_finding_has_a_positive_value_in_this_test():
    assert set(POSITIVE) | {"stemi"} == set(VISIBILITY)


@pytest.mark.parametrize("finding", sorted(POSITIVE))
def test_finding_drawn_exactly_in_its_visible_views(finding, normal_videos):
    state = PatientState("P", "S", **{finding: POSITIVE[finding]})
    assert sorted(_changed_views(state, normal_videos)) == sorted(VISIBILITY[finding])


def test_stemi_territories_drawn_only_in_listed_views(normal_videos):
    union: set[str] = set()
    for territory in ("LAD", "RCA", "LCx"):
        changed = set(
            _changed_views(PatientState("P", "S", stemi=True, stemi_territory=territory), normal_videos)
        )
        assert changed and changed <= set(VISIBILITY["stemi"]), (territory, changed)
        union |= changed
    assert union == set(VISIBILITY["stemi"])


def test_visible_state_resets_only_invisible_findings():
    s = PatientState("P", "S", mr=4, effusion=3, stemi=True, stemi_territory="LAD", heart_rate=90)
    a4c = visible_state(s, "A4C")
    assert a4c.mr == 0 and a4c.effusion == 3 and a4c.stemi and a4c.stemi_territory == "LAD"
    ssn = visible_state(s, "SSN")
    assert ssn.effusion == 0 and not ssn.stemi and ssn.stemi_territory is None
    assert ssn.heart_rate == 90 and s.mr == 4  # the input is not modified


@pytest.mark.parametrize("ef", [20, 45, 70])
def test_ef_sets_lv_fractional_area_change(ef):
    """The clip holds a whole systole and the cavity shrinks from ED by the EF."""
    ed = _render(PatientState("P", "S", ef=0), "A4C", frames=32, size=112, fps=30).lv_area
    assert np.ptp(ed) == 0  # EF 0: the cavity does not move
    area = _render(PatientState("P", "S", ef=ef), "A4C", frames=32, size=112, fps=30).lv_area
    assert area.max() == ed[0]  # end-diastole is in the clip
    assert 1 - area.min() / area.max() == pytest.approx(ef / 100, abs=0.03)


@pytest.mark.parametrize("hr,fps", [(50, 50), (50, 30), (110, 30), (80, 45)])
def test_clip_spans_end_diastole_to_end_systole(hr, fps):
    for seed in range(3):
        vid = _render(
            PatientState("P", "S", ef=60, heart_rate=hr), "A2C", seed=seed, frames=32, size=64, fps=fps
        )
        assert 1 - vid.lv_area.min() / vid.lv_area.max() > 0.55


@pytest.mark.parametrize(
    "finding,view",
    [
        ("mr", "Apical_Doppler"),
        ("ar", "Doppler_Parasternal_Long"),
        ("tr", "Doppler_Parasternal_Short"),
        ("pr", "Doppler_Parasternal_Short"),
    ],
)
def test_jets_grow_with_grade(finding, view):
    def coloured(grade: int) -> int:
        f = _render(PatientState("P", "S", **{finding: grade}), view, size=96).frames.astype(int)
        return int(((f.max(-1) - f.min(-1)) > 0).sum())

    counts = [coloured(g) for g in range(5)]
    assert all(a < b for a, b in zip(counts, counts[1:], strict=False)), counts


def test_effusion_ring_grows_with_grade():
    def dark(grade: int) -> int:
        vid = _render(PatientState("P", "S", effusion=grade), "Parasternal_Short", size=96)
        return int(((vid.frames[..., 0] == 0) & vid.sector_mask).sum())

    counts = [dark(g) for g in range(5)]
    assert all(a < b for a, b in zip(counts, counts[1:], strict=False)), counts


@pytest.mark.parametrize("view", VIEWS)
def test_shapes_masks_and_colour(view):
    state = sample_state(np.random.default_rng(3), "P", "S")
    vid = render_video(state, view, np.random.default_rng(11), frames=8, size=112)
    f = vid.frames
    assert f.dtype == np.uint8 and f.shape == (8, 112, frame_width(112), 3) and f.shape[2] > f.shape[1]
    assert vid.view == view and 30 <= vid.fps <= 50
    sector, annot = vid.sector_mask, vid.annotation_mask
    assert sector.shape == annot.shape == f.shape[1:3]
    assert sector.mean() > 0.3
    assert not (annot & sector).any()
    outside = ~sector & ~annot
    assert not f[:, outside].any()  # nothing else is drawn outside the fan
    lit = f[:, annot].max(axis=(0, 2))
    assert annot.sum() > 50 and (lit > 0).all()  # every annotation pixel is drawn
    in_fan = f[:, sector]
    grey = (in_fan[..., 0] == in_fan[..., 1]) & (in_fan[..., 1] == in_fan[..., 2])
    if view in DOPPLER_VIEWS:
        assert not grey.all()  # colour flow (normal flow is always there)
    else:
        assert grey.all()
    assert (vid.lv_area is not None) == (view not in ("SSN", "Doppler_Parasternal_Short"))


@pytest.mark.parametrize("size", [16, 32, 224])
def test_annotation_mask_exact_at_any_size(size):
    rng = np.random.default_rng(size)
    for view in VIEWS:
        vid = render_video(sample_state(rng, "P", "S"), view, rng, frames=3, size=size)
        f, annot, sector = vid.frames, vid.annotation_mask, vid.sector_mask
        assert not (annot & sector).any() and annot.any()
        assert not f[:, ~sector & ~annot].any()
        assert (f[:, annot].max(axis=(0, 2)) > 0).all()


def test_same_generator_state_same_video_and_different_seeds_differ():
    s = sample_state(np.random.default_rng(0), "P", "S")
    a = render_video(s, "A4C", np.random.default_rng(5), frames=6, size=64)
    b = render_video(s, "A4C", np.random.default_rng(5), frames=6, size=64)
    c = render_video(s, "A4C", np.random.default_rng(6), frames=6, size=64)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.annotation_mask, b.annotation_mask)
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(view="A6C"), "unknown view 'A6C'"),
        (dict(size=113), "even number"),
        (dict(size=8), "even number"),
        (dict(frames=0), "frames must be >= 1"),
        (dict(fps=0), "fps must be positive"),
    ],
)
def test_bad_arguments(kw, match):
    args = dict(view="A4C", frames=4, size=64)
    args.update(kw)
    view = args.pop("view")
    with pytest.raises(ValueError, match=match):
        render_video(PatientState("P", "S"), view, np.random.default_rng(0), **args)
