"""The claims: one torch-free module per runnable paper, named by its record id with `_` for `-`.

`claims/<id>.py` holds the paper's `PaperSpec` as `PAPER` (its labelled runs, defaults, metrics, the claim
text, the check that decides it and any figures) and, as the `METHODS` tuple, the `MethodSpec` of every method
the paper owns (`paper="<id>"`). Other papers may run those methods as arms of their own comparisons.

- `baselines.py` is the one shared file: the methods that belong to no paper (`paper=None`: magnitude
  pruning, the recent-token KV window) and the arms and data budget the KV-cache comparisons share.
- `_kit.py` is the shared claim logic: comparisons such as "A below c x B" with their reason text, the
  all-parts-must-hold rule, and readers of a run's metrics used by several claims.

`reference_impls.registry` lists these modules by name (`CLAIMS`) and joins them into its tables. A result's
code hash covers its own claim module, the modules that declare the methods its runs use, `_kit.py` and
`registry/specs.py`, never a neighbour's claim and never the list. This file holds no logic and is not part
of any hash: keep it that way.
"""

# The registry imports every claim module; importing it first lets a claim module be imported on its own.
from .. import registry  # noqa: F401
