"""Which host rules an app gets: requests, policy and precedence (spec/overlay-rules.md §2-§5).

Pure logic: the manifest's ``[[host]]`` rules and the rules of the profile it
picks are requests; the host policy grants or denies each by its host
``path``; among granted rules with the same ``at`` the manifest's beats the
profile's and a later one beats an earlier one (the others are *shadowed*).
Nested rules are not resolved here: in the view the most specific ``at`` wins
(:mod:`appimg.services.view`). Nothing here touches the host file system; whether a granted
host path can be shown is asked through a callable (see :func:`decide`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from appimg.digests import sha256
from appimg.host.profiles import Profile
from appimg.host.whitelist import HostPolicy

GRANTED = "granted"
DENIED = "denied"
SHADOWED = "shadowed"
UNAVAILABLE = "unavailable"
SKIPPED = "skipped"


# NamedTuples, not frozen dataclasses: defined at import on the launch path, they
# cost ~70 us each instead of ~500 us.
class Rule(NamedTuple):
    path: str  # host path
    at: str  # place in the view
    mode: str  # replace | under | over
    origin: str  # "manifest" or "profile NAME"
    #: Host paths strictly inside ``path`` that the policy denies: hidden in the view.
    hidden: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "path": self.path, "at": self.at, "mode": self.mode, "origin": self.origin,
        }  # fmt: skip
        if self.hidden:
            row["hidden"] = list(self.hidden)
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Rule:
        return cls(row["path"], row["at"], row["mode"], row["origin"], tuple(row.get("hidden", ())))

    def describe(self) -> str:
        return f"{self.path} -> {self.at} ({self.mode}, from the {self.origin})"


class Decision(NamedTuple):
    rule: Rule
    status: str  # GRANTED | DENIED | SHADOWED | UNAVAILABLE | SKIPPED
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {**self.rule.to_json(), "status": self.status, "reason": self.reason}


class Resolution(NamedTuple):
    profile: str
    decisions: tuple[Decision, ...]
    #: Problems that are not about one rule, e.g. a profile the host does not define.
    problems: tuple[str, ...] = ()

    @property
    def granted(self) -> tuple[Rule, ...]:
        """The rules in effect, outermost ``at`` first."""
        rules = [d.rule for d in self.decisions if d.status == GRANTED]
        return tuple(sorted(rules, key=lambda r: (r.at.count("/"), r.at)))

    @property
    def denied(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.status == DENIED)

    def refusals(self) -> list[str]:
        """What the host refused, one message each (``--strict`` makes these errors)."""
        return list(self.problems) + [
            f"host rule {d.rule.describe()} denied: {d.reason}" for d in self.denied
        ]

    def notices(self) -> list[str]:
        """Everything the user should be told about the rules, refusals first."""
        notes = self.refusals()
        for d in self.decisions:
            if d.status in (SHADOWED, UNAVAILABLE) and d.rule.origin == "manifest":
                notes.append(f"host rule {d.rule.describe()} not used: {d.reason}")
            if d.status == GRANTED and d.rule.hidden and d.rule.origin == "manifest":
                notes.append(
                    f"host rule {d.rule.describe()} granted without "
                    f"{', '.join(d.rule.hidden)} (denied by the host policy)"
                )
        return notes

    def fingerprint(self) -> str:
        """A digest of the rules in effect: equal views have equal fingerprints."""
        rows = [[r.path, r.at, r.mode, list(r.hidden)] for r in self.granted]
        return sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "problems": list(self.problems),
            "rules": [d.to_json() for d in self.decisions],
        }


def requests(manifest: Mapping[str, Any], profile: Profile | None) -> list[Rule]:
    """The profile's rules, then the manifest's own, in their order."""
    found = []
    if profile is not None:
        origin = f"profile {profile.name}"
        found += [Rule(r["path"], r["at"], r["mode"], origin) for r in profile.rules]
    for r in manifest.get("host", []):
        found.append(Rule(r["path"], r.get("at", r["path"]), r.get("mode", "replace"), "manifest"))
    return found


def decide(
    rules: Sequence[Rule],
    policy: HostPolicy,
    problem: Callable[[Rule], str | None] | None = None,
) -> tuple[Decision, ...]:
    """Grant or deny each rule by the policy, then apply same-``at`` precedence.

    ``problem(rule)``, if given, says why an allowed rule's host path cannot be
    shown (missing, reached through a symlink) or returns None when it can; such
    rules are UNAVAILABLE and take no part in precedence.
    """
    decisions: list[Decision] = []
    winner: dict[str, int] = {}
    for rule in rules:
        verdict = policy.check(rule.path)
        if not verdict.allowed:
            decisions.append(Decision(rule, DENIED, verdict.reason))
            continue
        rule = rule._replace(hidden=verdict.hidden)
        why = problem(rule) if problem is not None else None
        if why:
            decisions.append(Decision(rule, UNAVAILABLE, why))
            continue
        decisions.append(Decision(rule, GRANTED, verdict.reason))
        index = len(decisions) - 1
        previous = winner.get(rule.at)
        if previous is None:
            winner[rule.at] = index
            continue
        old = decisions[previous]
        # The app's own request beats the profile's; otherwise the later rule wins.
        if old.rule.origin == "manifest" and rule.origin != "manifest":
            loser, kept = index, previous
        else:
            loser, kept = previous, index
        lost = decisions[loser]
        why = f"shadowed by {decisions[kept].rule.describe()}"
        decisions[loser] = Decision(lost.rule, SHADOWED, why)
        winner[rule.at] = kept
    return tuple(decisions)


def resolve(
    manifest: Mapping[str, Any],
    profile: Profile | None,
    policy: HostPolicy | Callable[[], HostPolicy],
    *,
    no_host: bool = False,
    problem: Callable[[Rule], str | None] | None = None,
) -> Resolution:
    """The host rules of an app on this host.

    ``profile`` is the loaded profile the manifest names (None: not defined on
    this host, a problem unless it is ``none``). ``policy`` may be a callable so
    that the policy files are only read when there is something to decide;
    ``problem`` is passed on to :func:`decide`.
    """
    name = manifest.get("profile", "none")
    problems: tuple[str, ...] = ()
    if profile is None and name != "none":
        problems = (f"profile {name!r} is not defined on this host",)
    wanted = requests(manifest, profile)
    if no_host:
        skipped = tuple(Decision(r, SKIPPED, "--no-host") for r in wanted)
        return Resolution(name, skipped, ())
    if not wanted:
        return Resolution(name, (), problems)
    loaded = policy() if callable(policy) else policy
    return Resolution(name, decide(wanted, loaded, problem), problems)
