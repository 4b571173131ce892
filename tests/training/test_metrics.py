import random

import pytest

from training.metrics import compute_metrics, metrics_by_env, paired_difference, summary_line, wilson
from training.trajectory import Attempt, Timings, Trajectory


def traj(*scores, answers=None, env="e", tool_calls=0, tool_errors=0, turns=2, parse_errors=0, tokens=3):
    answers = answers or [str(i) for i in range(len(scores))]
    return Trajectory(
        task_id="t", env=env, prompt_ids=[1], completion_ids=[7] * tokens, env_mask=[1] * tokens,
        logprobs=[0.0] * tokens, attempts=[Attempt(answer=a, turn=i, score=s) for i, (a, s) in
                                           enumerate(zip(answers, scores, strict=True))],
        tool_calls=tool_calls, tool_errors=tool_errors, turns=turns, parse_errors=parse_errors,
        timings=Timings(total_s=1.5),
    )


def test_per_attempt_accuracy_and_transitions_by_hand():
    runs = ([traj(1, 1)] * 3  # right → right
            + [traj(1, 0)] * 1  # right → wrong
            + [traj(0, 1)] * 4  # wrong → right
            + [traj(0, 0)] * 2)  # wrong → wrong
    m = compute_metrics(runs)
    assert m.n == 10
    assert m.acc_t1.value == pytest.approx(0.4) and m.acc_t2.value == pytest.approx(0.7)
    assert m.delta.value == pytest.approx(0.3)
    assert m.delta_i_to_c.value == pytest.approx(0.4) and m.delta_c_to_i.value == pytest.approx(0.1)
    assert m.delta.value == pytest.approx(m.delta_i_to_c.value - m.delta_c_to_i.value)
    assert m.delta.low < 0.3 < m.delta.high


def test_correct_means_score_at_least_one_half_and_missing_answers_are_wrong():
    m = compute_metrics([traj(0.5), traj(0.49), traj(None), traj()])
    assert m.acc_t1.value == 0.25 and m.acc_t2.value == 0.25
    assert m.answered_rate.value == 0.75


def test_confirmatory_rate_and_verification_precision_by_hand():
    runs = [
        traj(1, 1, answers=["Paris", "paris."]),  # confirmed (normalised), right
        traj(0, 0, answers=["42", " 42 "]),  # confirmed, wrong
        traj(0, 0, answers=["7", "7"]),  # confirmed, wrong
        traj(0, 1, answers=["6", "5"]),  # changed
        traj(1),  # never verified: not in either denominator
    ]
    m = compute_metrics(runs)
    assert m.confirmatory_rate.n == 4 and m.confirmatory_rate.value == pytest.approx(3 / 4)
    assert m.verification_precision.n == 3 and m.verification_precision.value == pytest.approx(1 / 3)


def test_tool_and_parse_rates_use_calls_and_turns_as_denominators():
    m = compute_metrics([traj(1, tool_calls=3, tool_errors=1, turns=4, parse_errors=1),
                         traj(0, tool_calls=1, tool_errors=1, turns=2),
                         traj(0, turns=2, tokens=6)])
    assert m.tool_use_rate.value == pytest.approx(2 / 3)
    assert m.tool_error_rate.n == 4 and m.tool_error_rate.value == 0.5
    assert m.parse_error_rate.n == 8 and m.parse_error_rate.value == 0.125
    assert m.mean_turns == pytest.approx(8 / 3) and m.mean_tool_calls == pytest.approx(4 / 3)
    assert m.mean_model_tokens == pytest.approx(4) and m.mean_seconds == pytest.approx(1.5)
    no_calls = compute_metrics([traj(1)])
    assert no_calls.tool_error_rate.n == 0 and no_calls.tool_error_rate.value == 0.0


def test_wilson_known_values():
    half = wilson(5, 10)
    assert (half.value, round(half.low, 4), round(half.high, 4)) == (0.5, 0.2366, 0.7634)
    none = wilson(0, 10)
    assert none.low == 0.0 and round(none.high, 4) == 0.2775
    every = wilson(10, 10)
    assert every.high == 1.0 and round(every.low, 4) == 0.7225
    assert str(half) == "50.0% [23.7, 76.3]"


def test_empty_input_gives_zero_width_intervals_with_n_zero():
    m = compute_metrics([])
    assert m.n == 0
    for rate in (m.acc_t1, m.acc_t2, m.delta, m.delta_i_to_c, m.tool_use_rate, m.confirmatory_rate,
                 m.verification_precision, m.tool_error_rate):
        assert (rate.value, rate.low, rate.high, rate.n) == (0.0, 0.0, 0.0, 0)
    assert m.mean_turns == m.mean_tool_calls == m.mean_model_tokens == 0.0
    assert wilson(0, 0).n == 0


def test_paired_difference_intervals_are_sane():
    unchanged = paired_difference([True, False, True, False], [True, False, True, False])
    assert unchanged.value == 0.0 and unchanged.low < -0.1 and unchanged.high > 0.1  # never zero-width
    all_fixed = paired_difference([False] * 5, [True] * 5)
    assert all_fixed.value == 1.0 and all_fixed.high == 1.0 and 0.0 < all_fixed.low < 1.0
    all_broken = paired_difference([True] * 5, [False] * 5)
    assert all_broken.value == -1.0 and all_broken.low == -1.0 and -1.0 < all_broken.high < 0.0
    big = paired_difference([True] * 50 + [False] * 50, [True] * 50 + [False] * 50)
    assert 0 < big.high < unchanged.high  # narrower with more data
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])


def test_paired_difference_covers_the_true_difference_about_95_percent_of_the_time():
    rng = random.Random(0)
    both, lost, gained, n, reps = 0.5, 0.1, 0.2, 30, 400
    covered = 0
    for _ in range(reps):
        draws = [rng.random() for _ in range(n)]
        first = [u < both + lost for u in draws]
        last = [u < both or both + lost <= u < both + lost + gained for u in draws]
        d = paired_difference(first, last)
        covered += d.low <= gained - lost <= d.high
    assert covered / reps >= 0.92


def test_metrics_by_env_adds_all_only_for_several_envs():
    assert list(metrics_by_env([traj(1, env="a"), traj(0, env="a")])) == ["a"]
    by_env = metrics_by_env([traj(1, env="b"), traj(0, env="a"), traj(1, env="a")])
    assert list(by_env) == ["a", "b", "all"]
    assert by_env["a"].acc_t1.value == 0.5 and by_env["all"].n == 3


def test_summary_line_reports_both_attempts():
    line = summary_line("arith", compute_metrics([traj(0, 1), traj(1, 1)]))
    assert "Acc@t1 50.0%" in line and "Acc@t2 100.0%" in line and "Δ +50.0" in line


def test_wilson_bounds_are_exact_at_none_and_all():
    assert wilson(0, 44).low == 0.0 and wilson(44, 44).high == 1.0


def test_attempt_bars_draw_a_rate_of_zero():
    from training.plots import attempt_bars

    zero, some = wilson(0, 44), wilson(3, 44)
    png = attempt_bars([("probe", {"Acc@t1": (zero.value, zero.low, zero.high),
                                   "Acc@t2": (some.value, some.low, some.high)})])
    assert png.startswith(b"\x89PNG")


def test_runs_that_never_answered_are_counted_apart_with_why_they_stopped(scripted):
    from rich.console import Console

    from envs import get_env
    from training.eval import eval_rows, eval_table
    from training.runner import run_tasks

    env = get_env("arithmetic", level=1)
    policy = scripted(lambda prompt: "Let me think about it.")  # never an answer: every run hits max_turns
    result = run_tasks(policy, env, env.tasks("test", n=2), max_turns=2, protocol="code")
    m = result.metrics
    assert m.no_answer_rate.value == 1.0 and m.stop_reasons == {"max_turns": 2}
    line = summary_line("arithmetic", m)
    assert "no answer 2/2" in line and "stopped: max_turns 2" in line and "No run gave an answer" in line
    console = Console(width=200, record=True)
    console.print(eval_table(eval_rows({"baseline": result.trajectories})))
    shown = console.export_text()
    assert "no answer 2 · stopped: max_turns 2" in shown
    assert "–: nothing to count" in shown  # the caption explains the empty cells


def test_stop_reasons_group_failures():
    runs = [traj(1, 1), traj(1)]
    runs[0].stop_reason, runs[1].stop_reason = "verified", "error: ValueError: boom"
    assert compute_metrics(runs).stop_reasons == {"verified": 1, "error": 1}
