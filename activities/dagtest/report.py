"""What `airagent test` found: per DAG its run's state and, per task, what a person needs to see why it failed."""

from __future__ import annotations

from pydantic import BaseModel, Field

LOG_LINES = 20


class TaskResult(BaseModel):
    task_id: str = Field(description="with [i] for one instance of a mapped task")
    state: str = Field(description="Airflow's task instance state, or 'timeout' for the task the run was stopped in")
    seconds: float | None = None
    try_number: int = 0
    log_tail: list[str] = Field([], description=f"the last {LOG_LINES} lines of a task's log, when it did not succeed")

    @property
    def failed(self) -> bool:
        return self.state in ("failed", "timeout")


class DagResult(BaseModel):
    dag_id: str
    file: str = Field(description="the DAG's file, from the repository's root")
    line: int | None = Field(None, description="where the DAG is made in its file, when known")
    state: str = Field(description="the run's state: success, failed; timeout; error when no run could start")
    seconds: float = 0.0
    tasks: list[TaskResult] = []
    error: str | None = Field(None, description="why no run started, or what stopped it")

    @property
    def ok(self) -> bool:
        return self.state == "success"

    def failing_tasks(self) -> list[TaskResult]:
        return [t for t in self.tasks if t.failed]

    def reason(self) -> str:
        """One line: what failed."""
        if self.state == "timeout":
            running = [t.task_id for t in self.tasks if t.state == "timeout"]
            where = f" in task {running[0]}" if running else ""
            return f"{self.dag_id}: stopped after {self.seconds:.0f}s{where} (--timeout)"
        failing = self.failing_tasks()
        if failing:
            return f"{self.dag_id}: {', '.join(t.task_id for t in failing)} failed"
        if self.error:
            return f"{self.dag_id}: {last_line(self.error)}"
        return f"{self.dag_id}: the run ended {self.state}"


class DagTestReport(BaseModel):
    dags: list[DagResult] = []
    broken: dict[str, str] = Field(
        {}, description="files whose DAGs could not run because the file does not import: path -> the error's end"
    )
    scope: str | None = Field(None, description="with --changed: which files were looked at, and why")

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.dags) and not self.broken

    def markdown(self) -> str:
        """A table for a CI job's summary page."""
        rows = ["| DAG | file | state | seconds | failing tasks |", "| --- | --- | --- | --- | --- |"]
        for d in self.dags:
            failing = ", ".join(t.task_id for t in d.failing_tasks()) or ("" if d.ok else last_line(d.error or ""))
            cells = [d.dag_id, d.file, d.state, f"{d.seconds:.1f}", failing]
            rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        for path, error in self.broken.items():
            rows.append("| " + " | ".join(_cell(c) for c in ["", path, "does not import", "", error]) + " |")
        failed = sum(not d.ok for d in self.dags)
        verdict = "passed" if self.ok else f"{failed} of {len(self.dags)} DAGs failed"
        if self.broken:
            verdict += f", {len(self.broken)} files do not import"
        return f"### airagent test: {verdict}\n\n" + "\n".join(rows) + "\n"

    def annotations(self) -> list[str]:
        """GitHub Actions workflow commands, one per failing DAG, that mark its file and line."""
        found = []
        for d in self.dags:
            if not d.ok:
                where = _escape(d.file).replace(":", "%3A").replace(",", "%2C")
                found.append(f"::error file={where},line={d.line or 1}::{_escape(d.reason())}")
        for path, error in self.broken.items():
            where = _escape(path).replace(":", "%3A").replace(",", "%2C")
            found.append(f"::error file={where},line=1::{_escape(f'does not import: {error}')}")
        return found


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _cell(text: str) -> str:
    """Repository text in a Markdown table cell: no pipe or newline breaks the row, no markup is read."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "\\`")
