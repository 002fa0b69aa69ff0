"""hema.dedup.smear_fields: crops of one smear field share a field_group; duplicates stay inside one; look-alikes
on other fields do not join.

Synthetic fields run everywhere; the real pairs come from ../shared's Acevedo20 sample (each seen by
eye to be two crops of one field, centred on two neighbouring cells) and skip without it.
"""

from __future__ import annotations

import numpy as np
import pytest

from hema.dedup import duplicates as dedup
from hema.dedup import smear_fields as fields
from hema.dedup.components import components
from hema.dedup.signatures import signature_batch
from tests.dedup_cases import REVIEWED_SHARED, near_copy, neighbour_crops
from tests.test_dedup import SAMPLE, draw_field, needs_sample

def test_neighbour_crops_share_a_field_group_and_stay_distinct_duplicates() -> None:
    big = draw_field(30, side=520)
    left, right = neighbour_crops(big)  # 45 % apart along the diagonal
    others = [draw_field(seed) for seed in range(60, 72)]  # other fields, alike in every statistic
    copy = near_copy(others[0], ("shift_crop",), np.random.default_rng(1))
    images = [left, right, *others, copy]
    prints = signature_batch(images)
    found = dedup.find_duplicates(prints)
    shared = fields.find_fields(prints, [(p.a, p.b) for p in found.pairs])
    assert [(p.a, p.b) for p in shared.pairs] == [(0, 1)]
    dy, dx = shared.pairs[0].shift  # b's content lies 45 % of the side down and right in a
    assert abs(dy - 0.45 * left.shape[0]) <= 8 and abs(dx - 0.45 * left.shape[1]) <= 8
    assert found.dup_group[0] != found.dup_group[1]  # not duplicates
    group = shared.field_group
    assert group[0] == group[1] and group[2] == group[-1]  # the duplicate pair is in one field group
    assert len(set(group.tolist())) == len(images) - 2  # nothing else joined
    assert shared.group_sizes.tolist() == [2, 2] + [2] + [1] * 11 + [2]


def test_forked_chunks_find_what_one_process_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Search and confirmation split into many forked tasks give the one-process result exactly."""
    big = draw_field(31, side=520)
    images = [*neighbour_crops(big), *(draw_field(seed) for seed in range(80, 90))]
    prints = signature_batch(images)
    whole = fields.find_fields(prints, [], num_proc=1)
    proposed, _ = fields._proposals(np.stack([fp.field for fp in prints]).astype(np.float32))
    monkeypatch.setattr(fields, "_CHUNK", 3)  # 4 search tasks
    monkeypatch.setattr(fields, "_CONFIRM_CHUNK", 1)  # a task per proposed pair
    assert len(proposed) >= 3
    forked = fields.find_fields(prints, [], num_proc=2)
    assert forked.pairs == whole.pairs and [(p.a, p.b) for p in whole.pairs] == [(0, 1)]
    assert forked.field_group.tolist() == whole.field_group.tolist()


def test_field_groups_are_components_of_both_kinds_of_pair() -> None:
    dups = [dedup.DupPair(3, 5, "exact", 1.0)]
    shared = [fields.FieldPair(0, 3, 0.9, (100, 0)), fields.FieldPair(2, 4, 0.9, (0, 120))]
    links = [(p.a, p.b) for p in dups + shared]
    assert components(7, links).tolist() == [0, 1, 2, 0, 2, 0, 3]


def test_lone_images_make_single_groups() -> None:
    one = signature_batch([draw_field(5)])
    assert fields.find_fields(one, []).field_group.tolist() == [0]


@needs_sample
@pytest.mark.parametrize("side", [None, 288])  # the sample's own crops, and MLL23's 288 px layout
def test_real_shared_fields_are_found_and_nothing_else(side: int | None) -> None:
    from hema.base.imaging import decode_rgb

    files = sorted(p for p in SAMPLE.glob("*/*") if p.is_file())
    names = [f"{p.parent.name}/{p.name}" for p in files]
    images = [decode_rgb(p.read_bytes()).rgb for p in files]
    if side:
        images = [x[(x.shape[0] - side) // 2 :][:side, (x.shape[1] - side) // 2 :][:, :side] for x in images]
    prints = signature_batch(images)
    found = dedup.find_duplicates(prints)
    shared = fields.find_fields(prints, [(p.a, p.b) for p in found.pairs])
    pairs = {(names[p.a], names[p.b]) for p in shared.pairs}
    group = dict(zip(names, shared.field_group))
    missed = {(a, b) for a, b in REVIEWED_SHARED if group[a] != group[b]}
    # at 288 px the EO pair is 63 % of the side apart: beyond the search's reach (docs/dedup.md)
    assert missed == ({("eosinophil/EO_621854.jpg", "monocyte/MO_418203.jpg")} if side else set())
    also = {("eosinophil/EO_728356.jpg", "monocyte/MO_418203.jpg")}  # EO_728356 = EO_621854
    assert pairs - set(REVIEWED_SHARED) <= also  # nothing else (duplicates are dup pairs, not field pairs)
    dup_of = found.dup_group
    assert all(len(set(shared.field_group[dup_of == g])) == 1 for g in np.unique(dup_of))


def test_few_images_and_no_matches_give_no_pairs() -> None:
    """Two unrelated fields: nothing proposed beyond themselves (the search's empty paths)."""
    prints = signature_batch([draw_field(s) for s in (7, 8)])
    result = fields.find_fields(prints, [])
    assert result.pairs == [] and result.field_group.tolist() == [0, 1]


def test_overlap_correlation_is_the_pearson_correlation_of_the_overlap() -> None:
    """_confirm's scores, from sums over slices, are np.corrcoef of the overlapping pixels."""
    rng = np.random.default_rng(3)
    views = rng.normal(0, 30, (6, 32, 32)).astype(np.float32)
    views[1] = np.roll(views[0], (5, -7), axis=(0, 1)) + rng.normal(0, 5, (32, 32))  # a moved: mostly shared
    pairs = np.array([[0, 1], [2, 3], [4, 5], [0, 1]])
    shift = np.array([[-5, 7], [3, 0], [-9, -2], [-4, 6]])
    score, dy, dx, share = fields._confirm(views, (pairs, shift, 0))
    for (a, b), s, y, x, part in zip(pairs, score, dy, dx, share):
        overlap_a = views[a][max(0, y) : 32 + min(0, y), max(0, x) : 32 + min(0, x)]
        overlap_b = views[b][max(0, -y) : 32 + min(0, -y), max(0, -x) : 32 + min(0, -x)]
        assert overlap_a.size == round(part * 32 * 32)
        assert s == pytest.approx(np.corrcoef(overlap_a.ravel(), overlap_b.ravel())[0, 1], abs=1e-5)
    assert score[0] > 0.95 and abs(score[1]) < 0.2  # b's content lies at (-5, 7) in a
    refined = fields._confirm(views, (pairs[3:], shift[3:], 1))  # one cell off: refinement finds it
    assert (refined[1][0], refined[2][0]) == (-5, 7) and refined[0][0] == pytest.approx(score[0], abs=1e-6)


def _proposals_by_dicts(b, a, sim, shift, n_proposals: int) -> list[tuple[int, int, tuple[int, int]]]:
    """What _best_per_image means, one match at a time: per (b, a) its shift with the most votes, then
    the best correlation (the first shift of ties); per b its n_proposals best a (ties in a's order)."""
    groups: dict[tuple[int, int, int, int], list] = {}
    for key, s in zip(zip(b.tolist(), a.tolist(), *shift.T.tolist()), sim.tolist()):
        votes_best = groups.setdefault(key, [0, -1.0])
        votes_best[0] += 1
        votes_best[1] = max(votes_best[1], s)
    best: dict[tuple[int, int], tuple[int, float, tuple[int, int]]] = {}
    for (bi, ai, dy, dx), (votes, s) in sorted(groups.items()):
        if (bi, ai) not in best or (votes, s) > best[bi, ai][:2]:
            best[bi, ai] = (votes, s, (dy, dx))
    ranked = sorted((bi, -votes, -s, ai, sh) for (bi, ai), (votes, s, sh) in best.items())
    seen: dict[int, int] = {}
    out = []
    for bi, _, _, ai, sh in ranked:
        seen[bi] = seen.get(bi, 0) + 1
        if seen[bi] <= n_proposals:
            out.append((ai, bi, sh))
    return out


@pytest.mark.parametrize("n", [600, 2**24])  # 2**24 images leave the key room for 128 query images: several sorts
def test_proposals_rank_votes_then_the_best_match_exactly(n: int) -> None:
    """The packed-integer ranking of _best_per_image gives what the plain definition gives, to the bit,
    with repeated (b, a, shift) matches, tied correlations and more candidates than PROPOSALS."""
    rng = np.random.default_rng(5)
    m = 60_000
    b = rng.integers(100, 400, m)
    a = rng.integers(0, 80, m)  # ~200 matches of each b on 80 images at 9 shifts: votes of 1 to ~5
    shift = rng.integers(-1, 2, (m, 2))
    sim = rng.choice(np.linspace(fields.WINDOW_MIN, 1.0, 40, dtype=np.float32), m)  # ties on purpose
    a_out, b_out, shift_out = fields._best_per_image(b, a, sim, shift, n)
    got = list(zip(a_out.tolist(), b_out.tolist(), map(tuple, shift_out.tolist())))
    want = _proposals_by_dicts(b, a, sim, shift, fields.PROPOSALS)
    assert got == want
    assert (a_out.dtype, b_out.dtype, shift_out.dtype) == (np.int32, np.int32, np.int8)
    assert max(np.bincount(b_out)) == fields.PROPOSALS  # the cap was reached: ranking mattered
