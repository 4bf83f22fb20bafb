"""Cron descriptions made once per expression, not once per DAG.

Airflow describes a cron schedule in words ("At 00:00") each time it makes a cron
timetable, which serializing every DAG does: cron_descriptor loads its translations from
disk and parses the expression each time. The words depend only on the expression and
the locale, so one process keeps them; what a schedule that cannot be described raises is
not kept, and is raised again as before.
"""

from __future__ import annotations

import locale

KEPT = 4096


def install() -> None:
    try:
        from airflow.timetables._cron import CronMixin
    except ImportError:
        return
    describe = getattr(CronMixin, "_describe_with_dom_dow_fix", None)
    if describe is None:
        return
    kept: dict[tuple, str] = {}

    def described(self, expression: str) -> str:
        key = (expression, locale.getlocale())
        if (words := kept.get(key)) is None:
            words = describe(self, expression)
            if len(kept) < KEPT:
                kept[key] = words
        return words

    CronMixin._describe_with_dom_dow_fix = described
