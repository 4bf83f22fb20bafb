"""The changed-DAG judge on hand-built samples: regressions it must catch, noise it must let pass, and
too little data it must call inconclusive rather than guess on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy import stats

from activities.analysis.changed_dags import ChangedDagsPolicy, durations, holm, judge, judge_all
from airagent.models.analysis import DagSamples, Phase, TaskSample

POLICY = ChangedDagsPolicy()


def runs(task: str, n: int, *, failed: int = 0, seconds: float = 1.0) -> list[TaskSample]:
    """n finished instances of one task, the first `failed` of them failed; durations spread +-10%."""
    return [
        TaskSample(
            task_id=task,
            state="failed" if i < failed else "success",
            duration=seconds * (0.9 + 0.2 * i / max(n - 1, 1)),
        )
        for i in range(n)
    ]


def dag(new: list[TaskSample], previous: list[TaskSample], dag_id: str = "orders_etl") -> DagSamples:
    return DagSamples(dag_id=dag_id, new_version=4, new=new, previous=previous)


def test_the_defaults_are_the_documented_thresholds_and_cannot_be_changed_in_place():
    assert (POLICY.alpha, POLICY.min_new, POLICY.min_duration_samples) == (0.05, 3, 5)
    assert (POLICY.failure_margin, POLICY.duration_ratio, POLICY.new_dag_failure_rate) == (0.2, 1.5, 0.5)
    with pytest.raises(ValidationError):
        POLICY.alpha = 0.1  # type: ignore[misc]


def test_a_changed_dag_failing_every_run_against_a_healthy_past_fails_naming_the_dag_and_the_statistic():
    verdict = judge(dag(runs("load", 6, failed=6), runs("load", 20, failed=1)), POLICY)
    assert verdict.phase is Phase.failed and verdict.dag_id == "orders_etl"
    assert verdict.detail.startswith("orders_etl: failure rate 6/6 (100%) on version 4 vs 1/20 (5%) before")
    assert "P(worse by 20% or more)=0.9995 >= 0.95 (beta-binomial, uniform priors)" in verdict.detail


def test_three_failures_in_three_are_enough_against_a_healthy_past():
    verdict = judge(dag(runs("load", 3, failed=3), runs("load", 20, failed=1)), POLICY)
    assert verdict.phase is Phase.failed, verdict.detail
    assert "3/3 (100%)" in verdict.detail and "=0.99" in verdict.detail


def test_a_higher_failure_rate_by_chance_is_not_blamed_for_the_margin():
    # 5/9 against 8/40 is "significant" to an exact test (Boschloo p=0.02) and 36 points above; but a
    # version failing 20% of the time shows this often enough over many soaks to be no evidence of 20% more.
    table = [[5, 8], [4, 32]]
    assert stats.boschloo_exact(table, alternative="greater").pvalue < 0.05
    verdict = judge(dag(runs("load", 9, failed=5), runs("load", 40, failed=8)), POLICY)
    assert verdict.phase is Phase.successful
    assert "P(worse by 20% or more)=0.79" in verdict.detail and "< 0.95" in verdict.detail


def test_a_task_four_times_slower_with_enough_runs_fails_with_both_medians_and_p():
    verdict = judge(dag(runs("transform", 8, seconds=4.0), runs("transform", 20, seconds=1.0)), POLICY)
    assert verdict.phase is Phase.failed
    assert "task transform median 4s vs 1s before (x4, 8 vs 20 runs)" in verdict.detail
    assert "Mann-Whitney U p<0.0001 < 0.05 (Holm over 1 tasks), at least x1.5" in verdict.detail
    assert "failure rate" not in verdict.detail  # only what failed is named


def test_a_slowdown_below_the_minimum_effect_passes_however_significant():
    new, previous = runs("transform", 100, seconds=1.2), runs("transform", 100, seconds=1.0)
    assert (
        stats.mannwhitneyu([s.duration for s in new], [s.duration for s in previous], alternative="greater").pvalue
        < 1e-6
    )
    verdict = judge(dag(new, previous), POLICY)
    assert verdict.phase is Phase.successful
    assert "durations of 1 tasks no slower; slowest task transform median 1.2s vs 1s" in verdict.detail
    assert "(x1.2," in verdict.detail and "failure rate 0/100 (0%)" in verdict.detail


def test_too_few_runs_is_inconclusive_and_says_what_is_missing():
    verdict = judge(dag(runs("load", 2, failed=2), runs("load", 20)), POLICY)
    assert verdict.phase is Phase.inconclusive
    assert "2 finished task instances on version 4, 3 needed" in verdict.detail
    assert "no task with 5 successful durations on both versions (load 0 new and 20 before)" in verdict.detail


def test_a_dag_not_parsed_yet_is_inconclusive_on_the_new_version():
    verdict = judge(DagSamples(dag_id="orders_etl", previous=runs("load", 20)), POLICY)
    assert verdict.phase is Phase.inconclusive
    assert "0 finished task instances on the new version, 3 needed" in verdict.detail


def test_one_test_with_enough_samples_is_judged_and_the_other_shortfall_is_said():
    verdict = judge(dag(runs("load", 4), runs("load", 20)), POLICY)
    assert verdict.phase is Phase.successful
    assert "failure rate 0/4 (0%) on version 4 vs 0/20 (0%) before" in verdict.detail
    assert "no task with 5 successful durations on both versions (load 4 new and 20 before)" in verdict.detail


@pytest.mark.parametrize(("failed_new", "n_new"), [(4, 12), (6, 12), (2, 6), (10, 30)])
def test_an_unchanged_flaky_dag_failing_a_third_of_its_runs_before_and_after_passes(failed_new, n_new):
    verdict = judge(dag(runs("fetch", n_new, failed=failed_new), runs("fetch", 60, failed=20)), POLICY)
    assert verdict.phase is Phase.successful, verdict.detail
    assert "beta-binomial" in verdict.detail


def test_a_new_dag_failing_every_run_fails():
    verdict = judge(dag(runs("load", 3, failed=3), []), POLICY)
    assert verdict.phase is Phase.failed
    assert "failure rate 3/3 (100%) on version 4, no previous version; binomial p=0.1250 >= 0.05" in verdict.detail
    assert "every one failed" in verdict.detail


def test_a_new_dag_with_one_failure_in_ten_passes():
    verdict = judge(dag(runs("load", 10, failed=1), []), POLICY)
    assert verdict.phase is Phase.successful
    assert "1/10 (10%)" in verdict.detail and "against 50%" in verdict.detail


def test_a_new_dag_failing_mostly_but_not_always_fails_on_the_binomial_test():
    verdict = judge(dag(runs("load", 12, failed=11), []), POLICY)
    assert verdict.phase is Phase.failed and "binomial p=0.0032 < 0.05" in verdict.detail


def test_a_previous_version_with_too_few_runs_is_no_baseline():
    verdict = judge(dag(runs("load", 5, failed=5), runs("load", 1)), POLICY)
    assert verdict.phase is Phase.failed
    assert "only 1 before, too few to compare with" in verdict.detail


def test_durations_of_different_tasks_are_never_pooled():
    # The long task merely ran more often during soak; each task alone is as fast as it was.
    previous = runs("quick", 15, seconds=1.0) + runs("long", 5, seconds=10.0)
    new = runs("quick", 5, seconds=1.0) + runs("long", 15, seconds=10.0)
    pooled_new, pooled_old = [s.duration for s in new], [s.duration for s in previous]
    assert stats.mannwhitneyu(pooled_new, pooled_old, alternative="greater").pvalue < 0.01  # pooled: "slower"
    assert np.median(pooled_new) / np.median(pooled_old) > 5
    verdict = judge(dag(new, previous), POLICY)
    assert verdict.phase is Phase.successful, verdict.detail
    assert "durations of 2 tasks no slower" in verdict.detail


def test_one_slow_task_among_several_fails_alone_after_the_correction():
    previous = runs("a", 20) + runs("b", 20, seconds=3.0) + runs("c", 20, seconds=0.5)
    new = runs("a", 8) + runs("b", 8, seconds=9.0) + runs("c", 8, seconds=0.5)
    verdict = judge(dag(new, previous), POLICY)
    assert verdict.phase is Phase.failed
    assert "task b median 9s vs 3s before" in verdict.detail and "(Holm over 3 tasks)" in verdict.detail
    assert "task a" not in verdict.detail and "task c" not in verdict.detail


def test_failed_durations_do_not_count_as_how_long_the_work_takes():
    # The new version fails fast and retries succeed slowly: only the successes are compared.
    new = [TaskSample(task_id="t", state="failed", duration=0.1)] * 2 + runs("t", 6, seconds=1.0)
    finding = durations(dag(new, runs("t", 20, seconds=1.0)), POLICY)
    assert finding.phase is Phase.successful
    assert "task t median 1s vs 1s before (x1, 6 vs 20 runs)" in finding.detail


def test_degenerate_durations_give_a_verdict_not_an_error():
    zeros = [TaskSample(task_id="t", state="success", duration=0.0)] * 6
    assert judge(dag(zeros, zeros), POLICY).phase is Phase.successful
    ties = [TaskSample(task_id="t", state="success", duration=2.0)] * 6
    assert judge(dag(ties, ties), POLICY).phase is Phase.successful
    verdict = judge(dag(runs("t", 6, seconds=1.0), zeros), POLICY)
    assert verdict.phase is Phase.failed and "(xinf," in verdict.detail


def test_holm_adjusts_each_p_by_its_rank_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_judge_all_judges_each_dag_against_its_own_history():
    flaky = dag(runs("fetch", 12, failed=4), runs("fetch", 60, failed=20), dag_id="flaky")
    broken = dag(runs("load", 6, failed=6), runs("load", 20), dag_id="broken")
    verdicts = judge_all([flaky, broken], POLICY)
    assert [(v.dag_id, v.phase) for v in verdicts] == [("flaky", Phase.successful), ("broken", Phase.failed)]


samples = st.lists(
    st.builds(
        TaskSample,
        task_id=st.sampled_from(["a", "b", "c"]),
        state=st.sampled_from(["success", "failed", "upstream_failed"]),
        duration=st.none() | st.floats(min_value=0, max_value=1e6) | st.just(float("nan")),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(new=samples, previous=samples)
def test_any_samples_give_a_verdict(new, previous):
    verdict = judge(dag(new, previous), POLICY)
    assert verdict.phase in (Phase.successful, Phase.failed, Phase.inconclusive)
    assert verdict.detail.startswith("orders_etl: ")


@settings(max_examples=60, deadline=None)
@given(previous=samples, data=st.data())
def test_a_version_that_behaves_as_its_past_did_never_fails(previous, data):
    new = data.draw(st.permutations(previous))
    assert judge(dag(new, previous), POLICY).phase is not Phase.failed


def test_identical_distributions_fail_far_less_often_than_alpha():
    rng = np.random.default_rng(23)

    def draw(n: int) -> list[TaskSample]:
        failed = rng.random(n) < 0.3
        seconds = rng.lognormal(mean=0.0, sigma=0.5, size=n)
        return [
            TaskSample(task_id="t", state="failed" if f else "success", duration=float(d))
            for f, d in zip(failed, seconds, strict=True)
        ]

    verdicts = [judge(dag(draw(int(rng.integers(3, 15))), draw(40)), POLICY) for _ in range(200)]
    assert sum(v.phase is Phase.failed for v in verdicts) <= 0.05 * 200
