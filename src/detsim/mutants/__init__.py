"""Planted bugs: proof that the campaign finds real Raft and store mistakes (DESIGN
"Campaigns", `detsim mutants`).

`catalogue.MUTANTS` lists the bugs (each patches production classes from the outside, see
`_patch`); `scenarios` turns each default store scenario into `mutant.<bug>.<scenario>`;
`sweep.hunt` runs the default campaign against one bug until its first detection.
"""

from __future__ import annotations

from detsim.mutants._patch import Mutant, Patch, plant, planted, revert
from detsim.mutants.catalogue import MUTANTS, get

__all__ = ["MUTANTS", "Mutant", "Patch", "get", "plant", "planted", "revert"]
