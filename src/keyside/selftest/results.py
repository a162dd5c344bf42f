"""Results of the self-test: one ClassResult per attack class, listing the cases that failed."""

from __future__ import annotations

from dataclasses import dataclass, field

# A report line names at most this many failed cases; ClassResult.to_dict lists all of them.
MAX_FAILURES_SHOWN = 5


@dataclass(frozen=True)
class CaseFailure:
    """One corpus case that did not get the expected verdict, and what happened instead."""

    case_id: str
    problem: str


@dataclass
class ClassResult:
    """The outcome of one attack class: how many cases ran and which of them failed."""

    name: str
    title: str
    cases: int = 0
    failures: list[CaseFailure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.cases > 0 and not self.failures

    def record(self, case_id: str, problems: list[str]) -> None:
        """Count one case; each problem in `problems` is a failed expectation of that case."""
        self.cases += 1
        if problems:
            self.failures.append(CaseFailure(case_id, "; ".join(problems)))

    def summary(self) -> str:
        """Return one line: the title and the counts, with the first failed cases when any."""
        if self.cases == 0:
            return f"{self.title}: no case ran"
        if not self.failures:
            return f"{self.title}: {self.cases} of {self.cases} cases passed"
        listed = ", ".join(f"{failure.case_id} ({failure.problem})" for failure in self.failures[:MAX_FAILURES_SHOWN])
        more = len(self.failures) - MAX_FAILURES_SHOWN
        suffix = f", and {more} more" if more > 0 else ""
        return f"{self.title}: {len(self.failures)} of {self.cases} cases failed: {listed}{suffix}"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "title": self.title,
            "passed": self.passed,
            "cases": self.cases,
            "failures": [{"case": failure.case_id, "problem": failure.problem} for failure in self.failures],
        }
