"""The models the service holds: their versions, loaded from the artifacts folder, verified, warmed up.

Every folder of the artifacts folder that holds a checkpoint is a model, named after the folder: a
checkpoint of any 28x28 data set is served with the class names and framing its card gives, with no
code change. A model's versions are its numbered subfolders (`mnist/1/`, `mnist/2/`); a checkpoint at
the top of the folder, the layout before versions, is version 1. Folders whose names start with a dot
(staging areas) are not read.

Which versions are loaded: each model's version policy (`latest N`, `all`, `specific V...`; settings),
changed at run time by the model repository API. Loading a model without a version loads its policy's
versions afresh, as Triton does; unloading it unloads every version. Loading or unloading one version
(an extension of Triton's API) adds it beside the versions loaded or takes it away. A request that names
no version gets the newest loaded one, so unloading the newest version rolls back to the one before. A
reload (SIGHUP, /admin/reload) reads the repository anew: every model's policy applies again, and the
changes made through the repository API are dropped.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from models import CheckpointError, ModelCard
from models.card import Reference
from models.layout import checkpoint_versions, read_card
from models.reference import ReferenceArrays, map_reference
from service.core.errors import LoadFailed, NotFound, quoted
from service.core.passes import Runner
from service.core.runtime import Placement, RuntimeChoice, place
from service.core.versions import Plan, Policies

log = logging.getLogger("sae_serve")


@dataclass
class ServedModel:
    name: str
    card: ModelCard
    runner: Runner  # the model's pass, in the runtime chosen for it
    version: int = 1
    path: Path | None = None
    reference: ReferenceArrays | None = None  # the set /similar searches, mapped from disk
    no_reference: str = ""  # why there is none, where there is none

    def searched(self) -> tuple[ReferenceArrays, Reference]:
        """The version's reference set and its card's section; NotFound saying why where it has none."""
        if self.reference is None or self.card.reference is None:
            why = self.no_reference
            raise NotFound(f"model {self.name!r} version {self.version} has no reference set to search: {why}")
        return self.reference, self.card.reference

    @property
    def ood_summary(self) -> dict[str, object]:
        """What answers' ood_score means for this version: the score's name, threshold and how it was fitted."""
        ood = self.card.ood
        if ood is None:
            return {"score": "reconstruction", "threshold": self.card.error_threshold, "flat_std": None}
        return {
            "score": ood.score,
            "threshold": ood.threshold,
            "false_flag_rate": ood.false_flag_rate,
            "flat_std": ood.flat_std,
            "validation_examples": ood.validation_examples,
        }

    @property
    def class_names(self) -> list[str]:
        return list(self.card.class_names)

    @property
    def error_threshold(self) -> float:
        return self.card.error_threshold


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: int
    state: Literal["READY", "UNAVAILABLE"]
    reason: str
    card: ModelCard | None = None  # the version's card, loaded or only on disk (None where it cannot be read)


@dataclass
class LoadedModels:
    versions: dict[str, dict[int, ServedModel]] = field(default_factory=dict)  # every loaded version
    failures: dict[str, str] = field(default_factory=dict)  # models of which no version is loaded, and why
    index: list[IndexEntry] = field(default_factory=list)  # every version on disk or asked for, with its state
    # Models of which the repository API took every loaded version away: without a version, but not failed.
    unloaded: frozenset[str] = frozenset()
    models: dict[str, ServedModel] = field(init=False)  # each model's newest loaded version: what requests get

    def __post_init__(self) -> None:
        self.models = {name: loaded[max(loaded)] for name, loaded in sorted(self.versions.items()) if loaded}

    @property
    def ready(self) -> bool:
        return bool(self.models)

    @property
    def names(self) -> list[str]:
        """Every model found, loaded or not."""
        return sorted(set(self.models) | set(self.failures))


def model_folders(artifacts_dir: Path) -> dict[str, dict[int, Path]]:
    """Every model in the artifacts folder and its versions' folders."""
    if not artifacts_dir.is_dir():
        return {}
    found = {
        folder.name: checkpoint_versions(folder)
        for folder in artifacts_dir.iterdir()
        if folder.is_dir() and not folder.name.startswith(".")
    }
    return {name: versions for name, versions in sorted(found.items()) if versions}


def card_on_disk(folder: Path | None) -> ModelCard | None:
    """The card of a version not loaded, for its figures in /models; read once, when the set is built."""
    try:
        return read_card(folder) if folder is not None else None
    except CheckpointError:
        return None


def load_version(name: str, version: int, directory: Path, placement: Placement) -> ServedModel:
    card = read_card(directory)
    runner = placement.runner(directory, card)
    try:  # the first pass allocates: not a request's to pay for
        runner.run(np.zeros((1, card.config.input_dim), dtype=np.uint8))
    except Exception as e:  # the runtime's own error, whichever runtime: this version does not serve
        raise CheckpointError(f"{directory}: its first pass failed: {str(e)[:300]}") from e
    log.info(
        "model %s version %d loaded: %s on %s (sha256 %s)",
        name,
        version,
        runner.runtime,
        runner.device,
        card.weights_sha256[:12],
    )
    reference, no_reference = load_reference(directory, card)
    return ServedModel(name, card, runner, version, directory, reference, no_reference)


def load_reference(directory: Path, card: ModelCard) -> tuple[ReferenceArrays | None, str]:
    """The version's reference set, checked against its card, and why there is none where there is none. A card that
    names one whose file was not copied with it serves all but /similar; a file that fails its checks fails the
    version, as any other file of it would."""
    section = card.reference
    if section is None:
        return None, "its checkpoint was written without one (`sae-train export` adds it)"
    if not (directory / section.file).is_file():
        log.warning("%s: %s not found: this version serves no /similar", directory, section.file)
        return None, f"{section.file} was not copied with its checkpoint"
    path = directory / section.file
    arrays = map_reference(path, card.served_embedding.dim, len(card.class_names), section.sha256)
    if len(arrays) != section.size:
        raise CheckpointError(f"{path}: {len(arrays)} images where the card says {section.size}")
    return arrays, ""


def load_models(
    artifacts_dir: Path,
    placement: Placement,
    policies: Policies | None = None,
    plans: dict[str, Plan] | None = None,
    reuse: LoadedModels | None = None,
) -> LoadedModels:
    """Load the versions each model's policy and plan ask for; a version that fails is recorded with its reason,
    the others serve. Versions loaded in `reuse` from the same folder are taken from it, not read again."""
    policies = policies or Policies.parse([])
    plans = plans or {}
    versions: dict[str, dict[int, ServedModel]] = {}
    failures: dict[str, str] = {}
    index: list[IndexEntry] = []
    unloaded: set[str] = set()
    for name, folders in model_folders(artifacts_dir).items():
        plan = plans.get(name, Plan())
        wanted = plan.wanted(policies.of(name), list(folders))
        loaded: dict[int, ServedModel] = {}
        reasons: dict[int, str] = {}
        for version in sorted(set(folders) | set(wanted)):
            if version not in wanted:
                why = "unloaded through the repository API" if plan.unloaded or version in plan.removed else ""
                reasons[version] = why or f"not in the version policy {policies.of(name)}"
                continue
            if version not in folders:
                reasons[version] = f"version {version} not found in {artifacts_dir / name}"
                continue
            previous = reuse.versions.get(name, {}).get(version) if reuse else None
            if previous is not None and previous.path == folders[version]:
                loaded[version] = previous
                continue
            try:
                loaded[version] = load_version(name, version, folders[version], placement)
            except CheckpointError as e:
                reasons[version] = str(e)
                log.error("model %s version %d not loaded: %s", name, version, e)
        for version in sorted(set(loaded) | set(reasons)):
            ready = version in loaded
            state: Literal["READY", "UNAVAILABLE"] = "READY" if ready else "UNAVAILABLE"
            card = loaded[version].card if ready else card_on_disk(folders.get(version))
            index.append(IndexEntry(name, version, state, reasons.get(version, ""), card))
        if loaded:
            versions[name] = loaded
        elif plan.unloaded or (not wanted and plan.base is not None and plan.removed & plan.base):
            failures[name] = "unloaded through the repository API"
            unloaded.add(name)
        else:
            asked = [f"version {v}: {reasons[v]}" for v in wanted if v in reasons]
            failures[name] = "; ".join(asked) or "no version chosen by its policy"
    return LoadedModels(versions, failures, index, frozenset(unloaded))


class Peers(Protocol):
    """The other worker processes of this server, which apply every repository change and reload too
    (service.workers.sync); a process serving alone has none."""

    generation: int  # the number of the last change this process applied

    def plans(self) -> dict[str, Plan]:
        """The plans every process is to serve, as last published."""
        ...

    def applied(self) -> None:
        """Note that this process serves the plans of change `generation`."""
        ...

    async def publish(self, plans: dict[str, Plan]) -> None:
        """Have every other process apply these plans, and wait until each has."""
        ...

    def reload_all(self) -> None:
        """Have every other process reload its models too."""
        ...


class NoPeers:
    """A process serving alone: nothing to share."""

    generation = 0

    def plans(self) -> dict[str, Plan]:
        return {}

    def applied(self) -> None:
        return None

    async def publish(self, plans: dict[str, Plan]) -> None:
        return None

    def reload_all(self) -> None:
        return None


class ModelRepository:
    """The models being served and how to load them again: the one object that owns them.

    With several workers, a repository change made in one worker reaches the others through its peers
    (service.workers.sync), and is answered once every worker has applied it."""

    def __init__(
        self,
        artifacts_dir: Path,
        runtime: RuntimeChoice = "auto",
        device_choice: Literal["auto", "cpu", "cuda"] = "auto",
        threads: int = 0,
        policies: Policies | None = None,
        peers: Peers | None = None,
    ) -> None:
        self.artifacts_dir = artifacts_dir
        self.runtime, self.device_choice, self.threads = runtime, device_choice, threads
        self.policies = policies or Policies.parse([])
        # resolved by load(), which refuses CUDA where there is none, or ONNX Runtime where it is not installed
        self.placement = Placement(runtime, "cpu", threads)
        self.loaded = LoadedModels()
        self.plans: dict[str, Plan] = {}
        self._lock = asyncio.Lock()
        self.peers: Peers = peers or NoPeers()

    def load(self) -> LoadedModels:
        """The first load, before the server accepts connections (a worker started later takes the changes too)."""
        self.placement = place(self.runtime, self.device_choice, self.threads)
        self.plans = self.peers.plans()
        self.loaded = load_models(self.artifacts_dir, self.placement, self.policies, self.plans)
        self.peers.applied()
        return self.loaded

    async def reload(self) -> tuple[LoadedModels, bool]:
        """Load every model anew off the event loop, by its policy, then swap the whole set in one assignment.

        Requests already running keep the models they started with; the next ones get the new set. If no
        model loads, the old set stays. Returns the fresh set and whether it was swapped in.
        """
        async with self._lock:
            fresh = await asyncio.to_thread(load_models, self.artifacts_dir, self.placement, self.policies)
            if fresh.ready:
                self.loaded, self.plans = fresh, {}
                log.info("models reloaded: %s", serving(fresh))
            else:
                log.error("reload loaded no model (%s); keeping the models already loaded", fresh.failures)
            return fresh, fresh.ready

    async def sync(self) -> None:
        """Apply the repository changes another worker made (SIGUSR1), reading only the versions that changed."""
        async with self._lock:
            self.plans = self.peers.plans()
            fresh = await asyncio.to_thread(
                load_models, self.artifacts_dir, self.placement, self.policies, self.plans, self.loaded
            )
            self.loaded = fresh
            self.peers.applied()
            log.info("repository change %d applied: serving %s", self.peers.generation, serving(fresh))

    def _known(self, name: str) -> dict[int, Path]:
        folders = model_folders(self.artifacts_dir)
        if name not in folders:
            known = ", ".join(folders) or "none"
            raise NotFound(f"unknown model {quoted(name)} in the repository; models: {known}")
        return folders[name]

    def _changing(self, name: str) -> Plan:
        """The model's plan, its base fixed to what is loaded now if this is its first change."""
        plan = self.plans.get(name, Plan())
        if plan.base is not None:
            return plan
        loaded = set() if plan.unloaded else set(self.loaded.versions.get(name, {})) - plan.added
        return Plan(plan.unloaded, set(plan.added), set(plan.removed), loaded)

    async def load_model(self, name: str, version: int | None) -> LoadedModels:
        """Load a model's policy versions afresh, or one version beside those loaded; the served set changes only
        if everything asked for loads."""
        async with self._lock:
            folders = self._known(name)
            if version is not None and version not in folders:  # a failed load, as Triton answers it: 400
                on_disk = ", ".join(map(str, folders))
                raise LoadFailed(f"model {name!r} has no version {version} in the repository; versions: {on_disk}")
            if version is None:
                new_plan = Plan()
                reuse = LoadedModels({n: v for n, v in self.loaded.versions.items() if n != name})
            else:
                plan = self._changing(name)
                base = set() if plan.unloaded else plan.base
                new_plan = Plan(False, plan.added | {version}, plan.removed - {version}, base)
                reuse = self.loaded
            plans = {**self.plans, name: new_plan}
            fresh = await asyncio.to_thread(
                load_models, self.artifacts_dir, self.placement, self.policies, plans, reuse
            )
            asked = [version] if version is not None else new_plan.wanted(self.policies.of(name), list(folders))
            loaded = fresh.versions.get(name, {})
            failed = [e for e in fresh.index if e.name == name and e.version in asked and e.version not in loaded]
            if failed or not asked:
                served = sorted(self.loaded.versions.get(name, {}))
                why = "; ".join(f"version {e.version}: {e.reason}" for e in failed) or "its policy chooses no version"
                raise LoadFailed(f"model {name!r} not loaded ({why}); it still serves versions {served or 'none'}")
            await self._apply(plans, fresh)
            return fresh

    async def unload_model(self, name: str, version: int | None) -> LoadedModels:
        """Unload every version of a model, or one; requests then get the newest version still loaded."""
        async with self._lock:
            self._known(name)
            if version is None:
                new_plan = Plan(unloaded=True)
            else:
                plan = self._changing(name)
                new_plan = Plan(plan.unloaded, plan.added - {version}, plan.removed | {version}, plan.base)
            plans = {**self.plans, name: new_plan}
            fresh = await asyncio.to_thread(
                load_models, self.artifacts_dir, self.placement, self.policies, plans, self.loaded
            )
            await self._apply(plans, fresh)
            return fresh

    async def _apply(self, plans: dict[str, Plan], fresh: LoadedModels) -> None:
        self.plans, self.loaded = plans, fresh
        log.info("repository: serving %s", serving(fresh))
        await self.peers.publish(plans)


def serving(loaded: LoadedModels) -> str:
    return ", ".join(f"{name} {sorted(versions)}" for name, versions in loaded.versions.items()) or "none"
