"""Model versions: the one parser of a version a request names, the version policies (which of a model's
versions the service loads: `latest:N`, `all`, `specific:V...`), and a model's plan: the model repository
API's changes on top of its policy.

Pure parsing with no imports beyond the standard library and the core's errors: the settings check policies
when they are read, in the supervisor too, before it has set up what its workers need (Prometheus'
multiprocess folder).
"""

from dataclasses import dataclass, field
from typing import Literal

from service.core.errors import UndecodableInput, quoted

# Nine digits: every version number fits a 32-bit integer, as protocols and file systems expect.
MAX_VERSION_DIGITS = 9


def parse_version(value: object) -> int | None:
    """A version as a request names it, in a path, a query or a parameter (text or a whole number): None (the
    newest loaded) when absent or empty, else a whole number from 1."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= MAX_VERSION_DIGITS:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 10**MAX_VERSION_DIGITS:
        raise UndecodableInput(f"model version {quoted(value)} is not a version number (a whole number from 1)")
    return value


@dataclass(frozen=True)
class VersionPolicy:
    kind: Literal["latest", "all", "specific"]
    count: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "VersionPolicy":
        """`latest:N`, `all` or `specific:V:V...`."""
        kind, _, rest = text.strip().partition(":")
        numbers = rest.split(":") if rest else []
        if not all(n.isascii() and n.isdigit() and int(n) > 0 for n in numbers):
            raise ValueError(f"version policy {text!r}: versions and counts are whole numbers from 1")
        if kind == "latest" and len(numbers) <= 1:
            return cls("latest", count=int(numbers[0]) if numbers else 1)
        if kind == "all" and not numbers:
            return cls("all")
        if kind == "specific" and numbers:
            return cls("specific", versions=tuple(sorted({int(n) for n in numbers})))
        raise ValueError(f"version policy {text!r} is not latest:N, all or specific:V[:V...]")

    def choose(self, available: list[int]) -> list[int]:
        """The versions this policy serves, of those on disk (a specific version missing from disk included)."""
        if self.kind == "latest":
            return sorted(available)[-self.count :]
        if self.kind == "all":
            return sorted(available)
        return list(self.versions)

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.count}"
        return "all" if self.kind == "all" else "specific:" + ":".join(map(str, self.versions))


@dataclass(frozen=True)
class Policies:
    default: VersionPolicy
    per_model: dict[str, VersionPolicy]

    @classmethod
    def parse(cls, entries: list[str]) -> "Policies":
        """`[model=]policy` entries; one without a model is the default (latest:1 when none is given)."""
        default, per_model = VersionPolicy("latest"), {}
        for entry in entries:
            model, equals, policy = entry.rpartition("=")
            if equals and not model.strip():
                raise ValueError(f"version policy {entry!r}: name the model before '='")
            parsed = VersionPolicy.parse(policy)
            if model.strip():
                per_model[model.strip()] = parsed
            else:
                default = parsed
        return cls(default, per_model)

    def of(self, model: str) -> VersionPolicy:
        return self.per_model.get(model, self.default)


@dataclass
class Plan:
    """A model's repository changes: unloaded whole, or versions added to or taken from `base`, the versions
    its policy had loaded when the first change came (the policy's choice now, while there is none: so a
    version trained meanwhile does not push out the one being served)."""

    unloaded: bool = False
    added: set[int] = field(default_factory=set)
    removed: set[int] = field(default_factory=set)
    base: set[int] | None = None

    def wanted(self, policy: VersionPolicy, available: list[int]) -> list[int]:
        if self.unloaded:
            return []
        base = self.base if self.base is not None else set(policy.choose(available))
        return sorted((base | self.added) - self.removed)

    def to_dict(self) -> dict[str, object]:
        base = None if self.base is None else sorted(self.base)
        return {"unloaded": self.unloaded, "added": sorted(self.added), "removed": sorted(self.removed), "base": base}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> "Plan":
        added, removed, base = raw.get("added", []), raw.get("removed", []), raw.get("base")
        assert isinstance(added, list) and isinstance(removed, list) and (base is None or isinstance(base, list))
        return cls(
            bool(raw.get("unloaded")),
            {int(v) for v in added},
            {int(v) for v in removed},
            None if base is None else {int(v) for v in base},
        )
