"""The scenario catalogue (`detsim.campaign.registry`): names -> `Scenario`, the same in the CLI
and in every worker.

Scenarios come from provider modules, each exposing `SCENARIOS` (a sequence of Scenario):
the built-in `PROVIDERS`, then the modules named in `DETSIM_SCENARIO_MODULES` (comma-
separated; workers inherit the environment, so a user's own scenarios run in campaigns too).
A later catalogue (the store's scenarios) is one more entry in `PROVIDERS`.

Rules: loaded once, lazily (importing the campaign package stays cheap); names are unique
(a duplicate is an error naming both providers); order is the providers' order, which is the
order of `detsim scenarios` and of the campaign's tables.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping

from detsim.campaign.scenario import Scenario

PROVIDERS = ("detsim.examples.counter_scenario", "detsim.scenarios.catalogue")
ENV_MODULES = "DETSIM_SCENARIO_MODULES"
ALL = "all"  # the CLI word for every scenario, planted bugs included


class UnknownScenario(KeyError):
    """A name that is not in the catalogue; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Mapping[str, Scenario]):
    """A read-only mapping name -> Scenario, filled from the providers on first use."""

    def __init__(self) -> None:
        self._scenarios: dict[str, Scenario] | None = None
        self._origin: dict[str, str] = {}

    def _load(self) -> dict[str, Scenario]:
        if self._scenarios is None:
            scenarios: dict[str, Scenario] = {}
            extra = [m.strip() for m in os.environ.get(ENV_MODULES, "").split(",") if m.strip()]
            for module_name in (*PROVIDERS, *extra):
                for scenario in importlib.import_module(module_name).SCENARIOS:
                    self._add(scenarios, scenario, module_name)
            self._scenarios = scenarios
        return self._scenarios

    def _add(self, into: dict[str, Scenario], scenario: Scenario, origin: str) -> None:
        if not isinstance(scenario, Scenario):
            raise TypeError(f"{origin}.SCENARIOS holds {scenario!r}, not a Scenario")
        if scenario.name in into:
            raise ValueError(
                f"scenario {scenario.name!r} is defined twice: {self._origin[scenario.name]} "
                f"and {origin}"
            )
        into[scenario.name] = scenario
        self._origin[scenario.name] = origin

    def __getitem__(self, name: str) -> Scenario:
        scenarios = self._load()
        if name not in scenarios:
            known = ", ".join(scenarios) or "none"
            raise UnknownScenario(f"unknown scenario {name!r}; known scenarios: {known}")
        return scenarios[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def default_names(self) -> list[str]:
        """The default campaign: every scenario expected to pass (no planted bugs)."""
        return [name for name, s in self._load().items() if s.expect_pass]

    def select(self, names: tuple[str, ...] | list[str]) -> list[str]:
        """CLI names (or `all`; none: the default campaign) -> known names, in catalogue order.

        Raises UnknownScenario for a name not in the catalogue.
        """
        if not names:
            return self.default_names()
        if ALL in names:
            return list(self._load())
        for name in names:
            self[name]  # raises UnknownScenario with the known names
        return list(dict.fromkeys(names))


registry = Registry()
