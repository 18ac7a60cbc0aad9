"""Pure logic of tasks/logic with values computed by hand in each test."""

import math

import numpy as np
import pytest

from tasks.logic.answers import normalize_answer
from tasks.logic.buckets import assign_buckets, bucket, easy_threshold
from tasks.logic.filtering import (FilterConfig, check_label_decision, generation_decision, proposer_weight,
                                   question_decision)
from tasks.logic.generation_scores import (check_fidelity, contradicts, cycle_consistency, generation_reward,
                                           group_zscores, leave_one_out_diversity, set_diversity)
from tasks.logic.proposals import parse_question_proposal, parse_spec
from tasks.logic.sampling_plan import framing_for, sampler_ladder
from tasks.logic.selection import pick_candidate, round_sample
from tasks.logic.soft_match import soft_match
from tasks.logic.ste import cold_start, raw_ste, ste_difficulties, ste_percentile
from tasks.logic.voting import vote


def test_vote_majority_fraction_entropy_margin():
    v = vote(["red", "red", "red", "blue", "blue", "green", "red"])
    assert v.majority == "red"
    assert v.fraction == pytest.approx(4 / 7)
    expected_h = -(4 / 7 * math.log(4 / 7) + 2 / 7 * math.log(2 / 7) + 1 / 7 * math.log(1 / 7))
    assert v.entropy == pytest.approx(expected_h)
    assert v.margin == pytest.approx(4 / 7 - 2 / 7)


def test_vote_tie_goes_to_first_seen_and_unanimous_has_zero_entropy():
    assert vote(["blue", "red", "red", "blue"]).majority == "blue"
    assert vote(["red", "blue", "blue", "red"]).majority == "red"
    tie = vote(["a", "b"])
    assert tie.margin == 0.0 and tie.entropy == pytest.approx(math.log(2))
    same = vote(["yes"] * 7)
    assert (same.fraction, same.entropy, same.margin) == (1.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        vote([])


def test_raw_ste_max_and_mean_of_first_five_tokens():
    ents = [0.1, 0.9, 0.3, 0.2, 0.4, 5.0]
    assert raw_ste(ents) == 0.9  # the 6th token is past the first five
    assert raw_ste(ents, aggregate="mean") == pytest.approx((0.1 + 0.9 + 0.3 + 0.2 + 0.4) / 5)
    assert raw_ste([]) == 0.0
    with pytest.raises(ValueError, match="aggregate"):
        raw_ste([1.0], aggregate="median")


def test_ste_percentile_cold_start_below_eight_values():
    assert ste_percentile(2.0, [1.0] * 7) == pytest.approx(0.5)  # sigmoid(0)
    assert ste_percentile(3.0, []) == pytest.approx(1 / (1 + math.exp(-1.5)))
    # values <= 1e-6 do not count toward the eight
    assert ste_percentile(1.0, [0.0] * 20 + [0.5] * 7) == pytest.approx(cold_start(1.0))


def test_ste_percentile_full_window_uses_last_128_and_half_ties():
    history = [0.1 * i for i in range(1, 11)]  # 0.1 .. 1.0
    # 0.55: five values below -> 5/10
    assert ste_percentile(0.55, history) == pytest.approx(0.5)
    # 0.5 equals one value: 4 below + 0.5 -> 0.45
    assert ste_percentile(0.5, history) == pytest.approx(0.45)
    old = [100.0] * 50 + [0.2] * 128  # the 50 large values fall out of the window
    assert ste_percentile(1.0, old) == pytest.approx(1.0)


def test_ste_difficulties_window_rolls_with_each_value():
    out = ste_difficulties([1.0, 2.0], history=[1.5] * 7)
    assert out[0] == pytest.approx(cold_start(1.0))  # 7 values: cold start
    assert out[1] == pytest.approx(1.0)  # 8 values now: 2.0 above all of them


def test_easy_threshold_and_buckets():
    assert easy_threshold([0.5] * 31) == 0.15
    # Q1 0.3, Q3 0.9 -> 0.3 + 0.25 * 0.6 = 0.45
    assert easy_threshold([0.0, 0.4, 0.8, 1.2] * 8) == pytest.approx(0.45)
    assert easy_threshold([0.0] * 40) == 0.10  # clipped below
    assert easy_threshold([5.0] * 40) == 1.2  # clipped above
    assert bucket(0.1, 0.6, 0.3, theta_easy=0.15) == "easy"
    assert bucket(0.8, 6 / 7, 0.7, theta_easy=0.15) == "easy"
    assert bucket(1.2, 0.2, 0.0, theta_easy=0.15) == "unsolvable"
    assert bucket(1.0, 0.3, 0.1, theta_easy=0.15) == "hard"
    assert bucket(1.0, 0.5, 0.4, theta_easy=0.15) == "medium"
    out = assign_buckets([(0.1, 0.6, 0.3), (0.5, 0.5, 0.2)], history=[])
    assert out == [("easy", 0.15), ("medium", 0.15)]


def test_normalize_and_soft_match():
    assert normalize_answer("  The Red. ") == "red"
    assert normalize_answer("4") == "four"
    assert normalize_answer("True") == "yes"
    assert soft_match("three", "3") == 1.0
    assert soft_match("red square", "red") == 0.8
    assert soft_match("100", "104") == 0.7  # 4% relative error
    assert soft_match("100", "90") == 0.4  # 11%
    assert soft_match("two", "four") == 0.0
    assert soft_match("big red", "red blue") == pytest.approx(1 / 3)


def test_parse_question_proposal_and_spec_quality():
    p = parse_question_proposal("how many circles are there ? | two | three")
    assert p.well_formed and p.question == "how many circles are there ?" and p.validators == ("two", "three")
    assert not parse_question_proposal("how many circles ? | two | two").well_formed
    assert not parse_question_proposal("red circle").well_formed
    spec = parse_spec("a red circle | what color is the circle ? = red | how many objects are there ? = one | junk")
    assert spec.prompt == "a red circle" and len(spec.checks) == 2 and spec.n_raw_checks == 3
    # 0.5 * 1 + 0.3 * 2/3 + 0.2 * 1 - 0 = 0.9
    assert spec.quality == pytest.approx(0.9)
    yes_no = parse_spec("a circle | is there a circle ? = yes | is there a square ? = no")
    assert yes_no.quality == pytest.approx(0.5 + 0.3 + 0.2 - 0.2)
    assert parse_spec("").quality == 0.0


def test_generation_scores_by_hand():
    assert check_fidelity(["red", "red", "blue"], "red") == pytest.approx(0.7 + 0.3 * 2 / 3)
    assert check_fidelity(["blue", "blue", "blue"], "red") == pytest.approx(0.3)
    assert contradicts(["no", "no", "yes"], "yes") and not contradicts(["red"], "blue")
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert cycle_consistency(a, a, a) == 1.0
    assert cycle_consistency(a, b, a) == pytest.approx(0.5)
    assert cycle_consistency(a, -a, -a) == 0.0
    black, white = np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)
    assert set_diversity([black, white]) == 1.0 and set_diversity([black]) == 0.0
    # each image's mean distance to the other two: black (0 + 1) / 2, white (1 + 1) / 2
    assert leave_one_out_diversity([black, black, white]) == [0.5, 0.5, 1.0]
    assert leave_one_out_diversity([black]) == [0.0]
    assert generation_reward(1.0, 1.0, 0.5, 0.2, 0.0) == pytest.approx(0.684 + 0.1055 + 0.021)
    assert generation_reward(0.5, 0.0, 0.0, 0.0, 1.0) == 0.0
    assert group_zscores([1.0, 1.0]) == [0.0, 0.0]
    assert group_zscores([0.0, 2.0]) == [-1.0, 1.0]


def test_sampler_ladder_matches_method_quantiles():
    ladder = sampler_ladder(7)
    assert ladder[0] == (0.5, 0.3) and ladder[1] == (2.5, 1.0)
    assert ladder[6] == (0.7, 0.37)
    assert [framing_for(i) for i in (0, 6, 7)] == ["canonical", "evidence", "canonical"]


def test_selection_and_filtering():
    assert pick_candidate([(0.9, True, 0.1), (0.5, True, 0.6)]) == 1  # non-easy preferred
    assert pick_candidate([(0.9, True, 0.1), (0.5, True, 0.1)]) == 0  # all easy: highest u
    assert pick_candidate([(0.9, False, 0.9)]) is None
    ids = [f"img{i}" for i in range(10)]
    assert round_sample(ids, 4, 0, 0) == round_sample(list(reversed(ids)), 4, 0, 0)
    assert round_sample(ids, 4, 0, 0) != round_sample(ids, 4, 1, 0)
    assert sorted(round_sample(ids, 20, 0, 0)) == sorted(ids)
    item = {"well_formed": True, "bucket": "hard", "majority_fraction": 0.3, "ste_difficulty": 0.8}
    assert question_decision(item) == (False, "low-agreement")
    assert question_decision(item, FilterConfig(min_majority_fraction=0.25)) == (True, "hard")
    assert proposer_weight(item) == 0.8 and proposer_weight({**item, "bucket": "unsolvable"}) == 0.0
    assert generation_decision(0.9, True, 0.8) == (True, "accepted")
    assert generation_decision(0.9, False, 0.8) == (False, "not-best-of-group")
    assert generation_decision(0.5, True, 0.8) == (False, "low-reward")
    assert generation_decision(0.9, True, 0.2) == (False, "weak-spec")
    # Check labels: by default only from images the Solver accepted; looser policies add the rest.
    assert check_label_decision(0.7, 0.0, 0.5) and not check_label_decision(0.69, 0.0, 0.5)
    loose = FilterConfig(check_label_reward=0.0, max_check_contradiction=1 / 3)
    assert check_label_decision(0.1, 1 / 3, 0.5, loose) and not check_label_decision(0.1, 0.34, 0.5, loose)
    assert not check_label_decision(0.9, 0.0, 0.3, loose)  # weak spec


def test_rewards_by_hand():
    from tasks.logic.rewards import g, informativeness, proposer_reward, shaped_solver_reward, solver_reward

    assert g(0.675) == 1.0
    assert g(0.675 + 0.525) == pytest.approx(math.exp(-0.5))
    # H = 0, M = 0.9: 0.5 * exp(-0.675^2 / (2 * 0.525^2)) + 0
    assert informativeness(0.0, 0.9) == pytest.approx(0.5 * math.exp(-(0.675 ** 2) / (2 * 0.525 ** 2)))
    assert informativeness(0.675, 0.45) == pytest.approx(0.5 + 0.25)
    assert solver_reward(True, 0.6) == 0.6 and solver_reward(False, 0.6) == pytest.approx(-0.15)
    # p = 4/7, 9 words before the answer: pen = 0.5 -> 0.95
    assert shaped_solver_reward(0.6, 4 / 7, 9) == pytest.approx((4 / 7) ** 0.7 * 0.95 * 0.6)
    assert shaped_solver_reward(0.6, 1.0, 2) == pytest.approx(0.6)
    # d = 0.5, H = 0.9, s = 0.75: 0.35 + 0.3 * clip(0.45 + 0.1, -1, 1) = 0.35 + 0.165
    assert proposer_reward(0.5, 0.9, 0.75, easy=False) == pytest.approx(0.515)
    assert proposer_reward(0.5, 0.9, 0.75, easy=True) == 0.2
    assert proposer_reward(0.9, 0.0, 1.0, easy=False) == pytest.approx(0.63)  # H_SC = 0: STE term only


def test_validator_mapping():
    from tasks.logic.answers import map_to_validators

    assert map_to_validators("The Red one", ("red", "blue")) == "red"  # substring 0.8 >= 0.8
    assert map_to_validators("2", ("two", "three")) == "two"
    assert map_to_validators("green", ("red", "blue")) == "green"
    assert map_to_validators("yes", ("", "")) == "yes"


def test_alignment_gate_and_best_attempt():
    from tasks.logic.alignment import alignment, best_attempt, spec_accepted

    # check 1: majority "red" of 3/3 matches -> 0.7 + 0.3; check 2: "no" 2/3 vs expected "yes" -> 0.2
    assert alignment([["red"] * 3, ["no", "no", "yes"]], ["red", "yes"]) == pytest.approx((1.0 + 0.2) / 2)
    assert alignment([], []) == 0.0
    assert spec_accepted(1, 0.9, 0.9) == (False, "too-few-checks")
    assert spec_accepted(2, 0.5, 0.9) == (False, "low-spec-quality")
    assert spec_accepted(3, 0.9, 0.5) == (False, "misaligned-with-source")
    assert spec_accepted(2, 0.55, 0.55) == (True, "accepted")
    assert best_attempt([(False, 0.9, 0.4), (True, 0.6, 0.6), (True, 1.0, 1.0)]) == 1
    assert best_attempt([(False, 0.9, 0.4), (False, 0.6, 0.8)]) == 1  # 1.4 > 1.3


def test_baselines_advantages_and_beta():
    from tasks.logic.advantages import adaptive_beta, bucket_shifted, ema_advantages, max_normalized
    from tasks.logic.filtering import proposer_group_rewards

    adv, b = ema_advantages([1.0, 0.0], baseline=0.5)
    # a1 = 1 - 0.5; b = 0.6 * 0.5 + 0.4 * 1 = 0.7; a2 = 0 - 0.7; b = 0.42
    assert adv == pytest.approx([0.5, -0.7]) and b == pytest.approx(0.42)
    assert adaptive_beta(0.01, 0.02) == pytest.approx(0.01)
    assert adaptive_beta(0.01, 0.0) == pytest.approx(0.01 * math.exp(-0.1))
    assert adaptive_beta(99.0, 10.0) == 100.0 and adaptive_beta(0.001, 0.0) == 0.001
    assert adaptive_beta(0.5, float("nan")) == 0.5
    shifted, bases = bucket_shifted([1.0, 0.5, 1.0], ["hard", "easy", "hard"], {"hard": 0.5})
    # hard: 1 - 0.5, base -> 0.7; easy: 0.5 - 0, base -> 0.2; hard: 1 - 0.7
    assert shifted == pytest.approx([0.5, 0.5, 0.3]) and bases == pytest.approx({"hard": 0.82, "easy": 0.2})
    assert max_normalized([0.5, -1.0]) == [0.5, -1.0] and max_normalized([0.0, 0.0]) == [0.0, 0.0]
    group = proposer_group_rewards([
        {"selected": True, "proposer_reward": 0.6, "bucket": "medium", "ste_difficulty": 0.9},
        {"selected": False, "proposer_reward": None, "bucket": None, "ste_difficulty": 0.5},
        {"selected": False, "proposer_reward": None, "bucket": None, "ste_difficulty": 0.1},
    ])
    assert group == [(0.6, "medium"), (pytest.approx(0.35), "unsolved"), (pytest.approx(0.07), "unsolved")]


def test_malformed_proposer_outputs_carry_reasons():
    assert parse_question_proposal("").reject_reason == "no-question"
    assert parse_question_proposal("what color is the square ? | red").reject_reason == "no-validator-pair"
    assert parse_question_proposal("what color is the square ? | red | red").reject_reason == "identical-validators"
    garbage = parse_spec("| = | blue ? |")
    assert garbage.prompt == "" and garbage.checks == () and garbage.quality == 0.0
    no_checks = parse_spec("a red circle")
    assert no_checks.checks == () and no_checks.quality == 0.0


def test_diagnostic_statistics_by_hand():
    from tasks.logic.diagnostics import auroc, family_entropy, share

    # positives 0.8, 0.4; negatives 0.6, 0.2: pairs (0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2) -> 3/4
    assert auroc([0.8, 0.6, 0.4, 0.2], [True, False, True, False]) == 0.75
    assert auroc([0.3, 0.3, 0.1], [True, False, False]) == pytest.approx((0.5 + 1) / 2)
    assert math.isnan(auroc([0.1, 0.2], [True, True]))
    assert family_entropy(["color", "color", "count", "count"]) == pytest.approx(math.log(2))
    assert family_entropy([]) == 0.0 and share([True, False, False, False]) == 0.25


def test_experiment_targets_are_checked_with_their_shortfall():
    from tasks.logic.experiment_targets import target_checks

    def row(arm, seed, r, vqa, gen, diag=None):
        return {"arm": arm, "seed": seed, "round": r, "metrics": {"vqa_accuracy": vqa, "geneval_overall": gen},
                "diagnostics": diag or {}}

    diag = {"solver_target_accuracy": 0.5, "auroc_ste_error": 0.7, "auroc_disagreement_error": 0.6}
    rows = [row("control", 0, 0, 0.70, 0.80), row("control", 0, 1, 0.72, 0.81),
            row("paper", 0, 0, 0.70, 0.80), row("paper", 0, 1, 0.73, 0.78, diag),
            row("paper", 1, 1, 0.75, 0.80, {**diag, "auroc_ste_error": 0.5}),
            row("paper/ste-off", 0, 1, 0.70, 0.85)]
    checks = {c.claim: c for c in target_checks(rows)}
    vqa = checks["VQA gain over the base (points)"]
    assert round(vqa.measured, 6) == 4.0 and not vqa.met and round(vqa.gap, 6) == 1.0  # (0.73+0.75)/2 - 0.70
    assert round(checks["VQA gain over the matched control (points)"].measured, 6) == 2.0
    assert round(checks["GenEval-2D gain over the base (points)"].measured, 6) == -1.0
    assert checks["label accuracy of the Solver's training targets"].measured == 0.5
    ste = checks["share of arm-seeds where STE's AUROC beats disagreement's"]
    assert ste.measured == 0.5 and ste.detail == "1 of 2" and not ste.met
    assert round(checks["STE helps: paper minus STE-off, VQA (points)"].measured, 6) == 4.0
    assert checks["STE helps: paper minus STE-off, GenEval-2D (points)"].met is False


def test_preference_pairs_use_every_sample_of_the_larger_side_once_and_only_matched_against_mismatched():
    from tasks.logic.preference_pairs import preference_pairs

    verdicts = [("a:g0", "a", "match"), ("a:g1", "a", "match"), ("a:g2", "a", "match"), ("a:g3", "a", "mismatch"),
                ("b:g0", "b", "mismatch"), ("b:g1", "b", "mismatch"), ("b:g2", "b", "match"), ("b:g3", "b", "mismatch"),
                ("c:g0", "c", "match"), ("c:g1", "c", "match"),  # no rejected sample: no pair
                ("d:g0", "d", "not-in-grammar"), ("d:g1", "d", "mismatch")]  # an unreadable sample says nothing
    pairs = preference_pairs(verdicts, seed=3)
    assert pairs[:3] == [("a:g0", "a:g3"), ("a:g1", "a:g3"), ("a:g2", "a:g3")]
    assert pairs[3:] == [("b:g2", "b:g0"), ("b:g2", "b:g1"), ("b:g2", "b:g3")]
    # 2 matched against 3 mismatched: 3 pairs, each mismatched once, the matched cycled (one of them twice)
    uneven = preference_pairs([("e:g0", "e", "match"), ("e:g1", "e", "match"), ("e:g2", "e", "mismatch"),
                               ("e:g3", "e", "mismatch"), ("e:g4", "e", "mismatch")], seed=0)
    assert sorted(r for _, r in uneven) == ["e:g2", "e:g3", "e:g4"]
    assert sorted({c for c, _ in uneven}) == ["e:g0", "e:g1"]
    assert preference_pairs(verdicts, seed=3) == pairs  # seeded


def test_pretrain_mix_normalises_shares_and_names_the_bad_part():
    from tasks.logic.pretrain_mix import RELATION_READING_GROUPS, SEED_SET_GROUPS, format_mix, parse_mix

    mix = parse_mix("vqa=0.37, relate=0.18,caption=0.08,ask=0.07,spec=0.10,t2i=0.20", RELATION_READING_GROUPS)
    assert mix == {"vqa": 0.37, "relate": 0.18, "caption": 0.08, "ask": 0.07, "spec": 0.1, "t2i": 0.2}
    assert parse_mix("vqa=1,t2i=3", SEED_SET_GROUPS) == {"vqa": 0.25, "t2i": 0.75}
    assert parse_mix(format_mix(mix), RELATION_READING_GROUPS) == mix
    for text, words in [("relate=1", "'relate' is not one of"), ("vqa", "is not name=share"),
                        ("vqa=1,vqa=2", "twice"), ("vqa=x", "'x' of 'vqa' is not a number"),
                        ("vqa=0", "positive"), ("vqa=nan", "positive"), ("=1", "is not name=share")]:
        with pytest.raises(ValueError, match=words):
            parse_mix(text, SEED_SET_GROUPS)
