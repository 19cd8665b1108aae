"""Specs as JSON and back, so a checkpoint can record the model it was saved from.

Only constructor arguments that define the structure are recorded; initializers given at
construction (``weight_init=``) are code, not data, and are left out. The same layer object
used twice is written once with an ``id`` and referenced later by ``{"ref": id}``, so
shared parameters survive the round trip.

    >>> text = spec_to_json(nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1)))
    >>> spec_from_json(text)
    Sequential(
      (0): Dense(? -> 8, relu)
      (1): Dense(? -> 1)
    )
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from . import nn
from .errors import SpecError

FORMAT = "unifparam.spec/1"

MAX_DEPTH = 64


def spec_to_json(spec: nn.Layer) -> str:
    """The spec as a JSON string; raises SpecError for layer types it cannot record."""
    uses = Counter(id(layer) for layer in _walk(spec))
    ids: dict[int, int] = {}

    def encode(layer: nn.Layer) -> dict[str, Any]:
        if id(layer) in ids:
            return {"ref": ids[id(layer)]}
        out: dict[str, Any] = {"kind": layer.kind}
        if uses[id(layer)] > 1:
            ids[id(layer)] = out["id"] = len(ids)
        if isinstance(layer, nn.Sequential):
            out["layers"] = [encode(child) for child in layer]
            if layer.named:  # children named by the user (B3)
                out["names"] = [key for key, _ in layer.children()]
            return out
        if nn.KINDS.get(layer.kind) is not type(layer):
            raise SpecError(f"Cannot record a {type(layer).__name__} layer in a checkpoint; "
                            f"recordable layers: {', '.join(nn.KINDS)}.")
        out["args"] = {a: _plain(getattr(layer, a)) for a in layer.fields}
        return out

    return json.dumps({"format": FORMAT, "root": encode(spec)}, separators=(",", ":"))


def spec_from_json(text: str) -> nn.Layer:
    """The spec a :func:`spec_to_json` string describes; SpecError if it is not one."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise SpecError(f"The recorded spec is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SpecError(f"The recorded spec is not in format {FORMAT!r}.")
    made: dict[int, nn.Layer] = {}

    def decode(node: Any, depth: int) -> nn.Layer:
        if depth > MAX_DEPTH or not isinstance(node, dict):
            raise SpecError("The recorded spec is malformed (bad node or nesting too deep).")
        if "ref" in node:
            if node["ref"] not in made:
                raise SpecError(f"The recorded spec refers to unknown layer id {node['ref']!r}.")
            return made[node["ref"]]
        kind = node.get("kind")
        if kind == "Sequential":
            if not isinstance(node.get("layers"), list):
                raise SpecError("The recorded spec has a Sequential without a layer list.")
            layer = nn.Sequential()
            _remember(made, node, layer)
            names = node.get("names")
            if names is not None and (not isinstance(names, list) or len(names) != len(
                    node["layers"]) or not all(isinstance(n, str) for n in names)):
                raise SpecError("The recorded spec has a Sequential with bad child names.")
            kids = [decode(child, depth + 1) for child in node["layers"]]
            for i, kid in enumerate(kids):
                if names is None:
                    layer.add(kid)
                else:
                    layer.add(names[i], kid)
            return layer
        if kind not in nn.KINDS or kind == "Sequential":
            raise SpecError(f"The recorded spec has an unknown layer kind {kind!r}.")
        cls = nn.KINDS[kind]
        names = cls.fields
        args = node.get("args")
        if not isinstance(args, dict) or set(args) != set(names):
            raise SpecError(f"The recorded {kind} layer needs arguments {names}, got "
                            f"{sorted(args) if isinstance(args, dict) else args!r}.")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
        _check_types(kind, kwargs)
        try:
            layer = cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise SpecError(f"The recorded {kind} layer has invalid arguments: {e}") from None
        _remember(made, node, layer)
        return layer

    return decode(doc.get("root"), 0)


def _check_types(kind: str, kwargs: dict[str, Any]) -> None:
    for key, value in kwargs.items():
        if key in ("eps", "momentum", "rate"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif key == "use_bias":
            ok = isinstance(value, bool)
        elif key == "kernel_size":
            ok = isinstance(value, (int, tuple)) and not isinstance(value, bool) and (
                not isinstance(value, tuple) or (len(value) == 2 and all(
                    isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in value)))
        else:
            ok = value is None or isinstance(value, (int, str)) and not isinstance(value, bool)
        if not ok:
            raise SpecError(f"The recorded {kind} layer has a bad value for {key}: {value!r}.")


def _remember(made: dict[int, nn.Layer], node: dict[str, Any], layer: nn.Layer) -> None:
    if "id" in node:
        if not isinstance(node["id"], int) or node["id"] in made:
            raise SpecError(f"The recorded spec has a bad or repeated layer id {node['id']!r}.")
        made[node["id"]] = layer


def _walk(layer: nn.Layer) -> list[nn.Layer]:
    out = [layer]
    for _, child in layer.children():
        out += _walk(child)
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
