"""The changed-DAG judge: a DAG's task instances on its new version against those on its previous version(s).

A train is rolled back, and its commits held, on this verdict alone, so it must neither guess on too little
data nor blame a DAG for the flakiness it always had. Failure rate and durations are judged apart, each with
a test and a minimum effect: a change is blamed only when it is both unlikely to be chance and large enough
to matter. The functions are pure over samples a provider read; they never raise, so hand-built samples
test every rule.
"""

from __future__ import annotations

import math
from statistics import median
from typing import NamedTuple

from airagent.config.analysis import ChangedDagsPolicy
from airagent.models.analysis import DagSamples, DagVerdict, Phase, TaskSample

# The previous rate's distribution in equal slices: the posterior probability is a mean over their midpoints,
# exact to 1e-4.
SLICES = 2000


class Finding(NamedTuple):
    phase: Phase
    detail: str


def judge(samples: DagSamples, policy: ChangedDagsPolicy) -> DagVerdict:
    """Failed if its failure rate or a task's duration got worse; inconclusive if neither could be judged."""
    try:
        findings = [failures(samples, policy), durations(samples, policy)]
    except (ValueError, ArithmeticError) as err:
        return DagVerdict(dag_id=samples.dag_id, phase=Phase.inconclusive, detail=f"cannot judge: {err}")
    failed = [f for f in findings if f.phase is Phase.failed]
    if failed:
        phase = Phase.failed
    elif all(f.phase is Phase.inconclusive for f in findings):
        phase = Phase.inconclusive
    else:
        phase = Phase.successful
    detail = ". ".join(f.detail for f in (failed or findings))
    return DagVerdict(dag_id=samples.dag_id, phase=phase, detail=f"{samples.dag_id}: {detail}")


def judge_all(samples: list[DagSamples], policy: ChangedDagsPolicy) -> list[DagVerdict]:
    """Each DAG against its own history: one DAG's flakiness never weighs on another's verdict."""
    return [judge(s, policy) for s in samples]


def failures(samples: DagSamples, policy: ChangedDagsPolicy) -> Finding:
    """The posterior probability that the new version fails more often by at least the margin.

    With uniform priors each version's failure rate is Beta(failed + 1, succeeded + 1); the new version is
    failed when P(new rate - previous rate >= failure_margin) >= 1 - alpha. An exact test (Fisher's, or
    Boschloo's, more powerful at a handful of runs) only asks whether the new version fails more at all and
    leaves the margin to the observed rates, which at soak's sample sizes clear it by chance: an unchanged DAG
    failing 30% of its runs was blamed at 4.3% of looks that way, at 0.2% this way, while 3 failures in 3
    against 1 in 20 before still fail (P=0.99). A DAG without enough history is held to an absolute rate.
    """
    version = f"version {samples.new_version}" if samples.new_version is not None else "the new version"
    new_failed, new_n = counts(samples.new)
    if new_n < policy.min_new:
        return Finding(Phase.inconclusive, f"{new_n} finished task instances on {version}, {policy.min_new} needed")
    old_failed, old_n = counts(samples.previous)
    seen = f"failure rate {rate(new_failed, new_n)} on {version}"
    if old_n < policy.min_new:
        return new_dag(new_failed, new_n, old_n, seen, policy)
    import numpy as np
    from scipy import stats  # here, not at the top: scipy takes seconds to import, and the CLI imports this module

    new = stats.beta(new_failed + 1, new_n - new_failed + 1)
    old = stats.beta(old_failed + 1, old_n - old_failed + 1)
    worse = float(np.mean(new.sf(old.ppf((np.arange(SLICES) + 0.5) / SLICES) + policy.failure_margin)))
    confidence = 1 - policy.alpha
    return Finding(
        Phase.failed if worse >= confidence else Phase.successful,
        f"{seen} vs {rate(old_failed, old_n)} before; P(worse by {policy.failure_margin:.0%} or more)={worse:.4f}"
        f" {'>=' if worse >= confidence else '<'} {confidence:g} (beta-binomial, uniform priors)",
    )


def new_dag(failed: int, n: int, before: int, seen: str, policy: ChangedDagsPolicy) -> Finding:
    """One-sided binomial test against `new_dag_failure_rate`, or every one of at least `min_new` failed.

    The binomial test alone needs five failures in five to beat a 50% rate at 5%; a DAG that never once
    succeeded is broken whatever its count, as deterministic as an import error. One failure in ten is
    neither, and passes.
    """
    from scipy import stats

    p = finite(stats.binomtest(failed, n, policy.new_dag_failure_rate, alternative="greater").pvalue)
    every = failed == n
    history = "no previous version" if not before else f"only {before} before, too few to compare with"
    return Finding(
        Phase.failed if p < policy.alpha or every else Phase.successful,
        f"{seen}, {history}; binomial {significance(p, policy.alpha)} against"
        f" {policy.new_dag_failure_rate:.0%}" + ("; every one failed" if every else ""),
    )


def durations(samples: DagSamples, policy: ChangedDagsPolicy) -> Finding:
    """Mann-Whitney U, one-sided (new slower), per task with Holm's correction over the tasks compared.

    Tasks of a DAG differ in length, so each is compared only with itself: pooled, a DAG whose long task
    merely ran more often during soak would look slower. The rank test assumes no distribution, and the
    ratio of medians keeps a significant but small slowdown (many runs, x1.1) from failing.
    """
    new, old = successful_durations(samples.new), successful_durations(samples.previous)
    k = policy.min_duration_samples
    tasks = sorted(t for t in new.keys() & old.keys() if len(new[t]) >= k and len(old[t]) >= k)
    if not tasks:
        seen = sorted(new.keys() | old.keys(), key=lambda t: -len(new.get(t, [])) - len(old.get(t, [])))
        short = ", ".join(f"{t} {len(new.get(t, []))} new and {len(old.get(t, []))} before" for t in seen[:3])
        return Finding(
            Phase.inconclusive,
            f"no task with {k} successful durations on both versions" + (f" ({short})" if short else ""),
        )
    from scipy import stats

    pvalues = holm([finite(stats.mannwhitneyu(new[t], old[t], alternative="greater").pvalue) for t in tasks])
    ratios = [ratio(median(new[t]), median(old[t])) for t in tasks]
    slow = [i for i in range(len(tasks)) if pvalues[i] < policy.alpha and ratios[i] >= policy.duration_ratio]

    def line(i: int) -> str:
        t = tasks[i]
        return (
            f"task {t} median {median(new[t]):.3g}s vs {median(old[t]):.3g}s before (x{ratios[i]:.2g},"
            f" {len(new[t])} vs {len(old[t])} runs); Mann-Whitney U {significance(pvalues[i], policy.alpha)}"
            f" (Holm over {len(tasks)} tasks), at least x{policy.duration_ratio:g}"
        )

    if slow:
        return Finding(Phase.failed, "; ".join(line(i) for i in slow))
    slowest = max(range(len(tasks)), key=ratios.__getitem__)
    return Finding(Phase.successful, f"durations of {len(tasks)} tasks no slower; slowest {line(slowest)}")


def counts(samples: list[TaskSample]) -> tuple[int, int]:
    finished = [s for s in samples if s.state in ("success", "failed")]
    return sum(s.state == "failed" for s in finished), len(finished)


def successful_durations(samples: list[TaskSample]) -> dict[str, list[float]]:
    """A failed task's duration says how soon it failed, not how long the work takes."""
    by_task: dict[str, list[float]] = {}
    for s in samples:
        if s.state == "success" and s.duration is not None and math.isfinite(s.duration):
            by_task.setdefault(s.task_id, []).append(s.duration)
    return by_task


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values: as safe as Bonferroni for the family, never less powerful."""
    adjusted = [1.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(range(len(pvalues)), key=pvalues.__getitem__)):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def ratio(new: float, old: float) -> float:
    if old > 0:
        return new / old
    return math.inf if new > 0 else 1.0


def finite(p: float) -> float:
    """A test on degenerate samples (all ties, nothing failed) may answer NaN: no evidence of anything."""
    return float(p) if math.isfinite(p) else 1.0


def rate(failed: int, n: int) -> str:
    return f"{failed}/{n} ({failed / n:.0%})"


def significance(p: float, alpha: float) -> str:
    shown = f"p={p:.4f}" if p >= 0.0001 else "p<0.0001"
    return f"{shown} {'<' if p < alpha else '>='} {alpha:g}"
