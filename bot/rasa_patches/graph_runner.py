"""`DaskGraphRunner.run` without dask.

Replaces: each message's NLU and policy graphs went to dask, whose scheduler cost ~7 % of the
server's time to order a dozen nodes that run one after another anyway. The graph is now run
depth-first in this process: each needed node once, after its inputs, with the same inputs,
outputs and `GraphRunError` wrapping.
"""

from __future__ import annotations

from typing import Any, cast

from rasa.engine.exceptions import GraphRunError
from rasa.engine.graph import GraphSchema
from rasa.engine.runner.dask import DaskGraphRunner

STOCK_GRAPH_RUN = DaskGraphRunner.run  # kept for the equivalence tests


def _run_graph(self: DaskGraphRunner, inputs: dict[str, Any] | None = None, targets: list[str] | None = None) -> dict[str, Any]:
    """`DaskGraphRunner.run` without dask: the same graph evaluated depth-first in this thread."""
    run_targets = targets if targets else self._graph_schema.target_names
    key = tuple(run_targets)
    schemas: dict[tuple[str, ...], GraphSchema] = self.__dict__.setdefault("_crs_minimal_schemas", {})
    schema = schemas.get(key)
    if schema is None:
        schema = schemas[key] = self._graph_schema.minimal_graph_schema(run_targets)
    given = inputs or {}
    for value in given.values():
        if isinstance(value, str) and value in schema.nodes:
            raise GraphRunError(f"Input value '{value}' clashes with a node name.")
    results: dict[str, Any] = {}

    def evaluate(name: str) -> tuple[str, Any] | str:
        if name not in results:
            if name in given:
                results[name] = (name, given[name])  # dask saw inputs as literal (name, value)
            elif name not in schema.nodes:
                return name  # as dask: an unresolvable need arrives as its name (GraphNode warns)
            else:
                needs = schema.nodes[name].needs.values()
                results[name] = self._instantiated_nodes[name](*(evaluate(n) for n in needs))
        return results[name]

    try:
        return dict(cast(tuple[str, Any], evaluate(target)) for target in run_targets)  # a target is a node: a pair
    except RuntimeError as e:
        raise GraphRunError("Error running runner.") from e


def install() -> None:
    DaskGraphRunner.run = _run_graph
