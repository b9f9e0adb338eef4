"""A stand-in for ComfyUI's workflow machinery, so workflows and nodes are tested without ComfyUI.

Three pieces, each following what ComfyUI (0.3.x) and its frontend do:

* :func:`check_ui_workflow` — checks a UI-format workflow (``"version": 0.4``, what drag-and-drop loads)
  node by node and widget by widget against the node classes: socket names and types, link types,
  the number of ``widgets_values``, combo values, INT/FLOAT ranges.
* :func:`to_api_prompt` — converts it to the API format that ``POST /prompt`` takes, as the frontend's
  "Export (API)" does (widget values by position, control-after-generate values skipped).
* :func:`validate_prompt` and :class:`Executor` — ComfyUI's server-side validation (``execution.py``
  ``validate_inputs``: required inputs, link types, value conversion, min/max, combo lists,
  ``VALIDATE_INPUTS``) and its execution semantics: only what output nodes need runs, in dependency
  order, under ``torch.inference_mode()``, each node once per prompt, outputs cached across prompts by
  a signature of the node's inputs (so re-queueing an unchanged prompt runs nothing).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
SEED_WIDGET_NAMES = ("seed", "noise_seed")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")


class WorkflowError(Exception):
    """A workflow or prompt that ComfyUI would refuse; ``problems`` lists every reason found."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# ------------------------------------------------------------------------------- node declarations
def input_specs(cls: type) -> list[tuple[str, str, Any, dict]]:
    """``(name, "required"|"optional", type, options)`` for every non-hidden input, in declaration order."""
    declared = cls.INPUT_TYPES()
    specs = []
    for category in ("required", "optional"):
        for name, spec in declared.get(category, {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs.append((name, category, spec[0], options))
    return specs


def combo_options(type_: Any, options: dict) -> list | None:
    """The allowed values of a combo input (a list type, or ``"COMBO"`` with ``options``), else None."""
    if isinstance(type_, (list, tuple)):
        return list(type_)
    if type_ == "COMBO":
        return list(options.get("options", []))
    return None


def is_widget(type_: Any, options: dict) -> bool:
    """Whether the frontend draws this input as a widget (a value), rather than a socket (a link)."""
    if options.get("forceInput"):
        return False
    return combo_options(type_, options) is not None or type_ in WIDGET_TYPES


def widget_slots(name: str, type_: Any, options: dict) -> int:
    """How many ``widgets_values`` entries the widget takes: an INT seed adds its control-after-generate
    value, an image-upload combo adds its upload button's value."""
    extra = 0
    if type_ == "INT" and (options.get("control_after_generate") or name in SEED_WIDGET_NAMES):
        extra = 1
    if options.get("image_upload"):
        extra = 1
    return 1 + extra


def type_name(type_: Any) -> str:
    """The socket type string of an input (combos are ``COMBO``)."""
    return "COMBO" if isinstance(type_, (list, tuple)) else str(type_)


def types_compatible(received: str, expected: str) -> bool:
    """ComfyUI's link check: equal, ``*``, or overlapping comma-separated unions."""
    if received == expected or "*" in (received, expected):
        return True
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def check_value(name: str, type_: Any, options: dict, value: Any) -> tuple[Any, str | None]:
    """Convert a widget value as ComfyUI does and check it; returns ``(value, problem or None)``."""
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    converters = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
    if isinstance(type_, str) and type_ in converters:
        try:
            value = converters[type_](value)
        except (TypeError, ValueError) as exc:
            return value, f"{name}: cannot convert {value!r} to {type_} ({exc})"
    if "min" in options and value < options["min"]:
        return value, f"{name}: value {value} smaller than min of {options['min']}"
    if "max" in options and value > options["max"]:
        return value, f"{name}: value {value} bigger than max of {options['max']}"
    allowed = combo_options(type_, options)
    if allowed is not None and value not in allowed:
        return value, f"{name}: {value!r} not in {allowed}"
    return value, None


# ---------------------------------------------------------------------------------- UI workflows
def _links_by_id(workflow: dict) -> dict[int, list]:
    return {link[0]: link for link in workflow.get("links", [])}


def check_ui_workflow(workflow: dict, mappings: Mapping[str, type]) -> list[str]:
    """Every reason ComfyUI's frontend or server would reject (or mis-load) this UI-format workflow."""
    problems: list[str] = []
    for key in ("last_node_id", "last_link_id", "nodes", "links", "version"):
        if key not in workflow:
            problems.append(f"workflow: missing top-level key '{key}'")
    if workflow.get("version") != 0.4:
        problems.append(f"workflow: version {workflow.get('version')!r}, expected 0.4")
    if problems:
        return problems
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = _links_by_id(workflow)
    if len(nodes) != len(workflow["nodes"]):
        problems.append("workflow: duplicate node ids")
    if nodes and workflow["last_node_id"] < max(nodes):
        problems.append(f"workflow: last_node_id {workflow['last_node_id']} < largest node id {max(nodes)}")
    if links and workflow["last_link_id"] < max(links):
        problems.append(f"workflow: last_link_id {workflow['last_link_id']} < largest link id {max(links)}")

    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node.get('type')})"
        cls = mappings.get(node.get("type"))
        if cls is None:
            problems.append(f"{where}: no such node class")
            continue
        if node.get("mode", 0) != 0:
            problems.append(f"{where}: mode {node.get('mode')} (muted/bypassed nodes are not allowed here)")
        problems += _check_node_sockets(where, node, cls, links)
        problems += _check_node_widgets(where, node, cls)

    for link_id, link in links.items():
        problems += _check_link(link_id, link, nodes, mappings)
    return problems


def _check_node_sockets(where: str, node: dict, cls: type, links: dict[int, list]) -> list[str]:
    problems = []
    returns = list(cls.RETURN_TYPES)
    names = list(getattr(cls, "RETURN_NAMES", returns))
    outputs = node.get("outputs", [])
    if len(outputs) != len(returns):
        problems.append(f"{where}: {len(outputs)} outputs, the class has {len(returns)}")
    for slot, output in enumerate(outputs[: len(returns)]):
        if output.get("type") != returns[slot]:
            problems.append(f"{where}: output {slot} typed {output.get('type')!r}, class returns {returns[slot]!r}")
        if output.get("name") != names[slot]:
            problems.append(f"{where}: output {slot} named {output.get('name')!r}, class names it {names[slot]!r}")
        for link_id in output.get("links") or []:
            if link_id not in links:
                problems.append(f"{where}: output {slot} lists unknown link {link_id}")
    specs = {name: (category, type_, options) for name, category, type_, options in input_specs(cls)}
    linked = set()
    for inp in node.get("inputs", []):
        name = inp.get("name")
        if name not in specs:
            problems.append(f"{where}: input '{name}' is not an input of the class")
            continue
        category, type_, options = specs[name]
        if inp.get("type") != type_name(type_):
            problems.append(f"{where}: input '{name}' typed {inp.get('type')!r}, class declares {type_name(type_)!r}")
        if is_widget(type_, options) and "widget" not in inp:
            problems.append(f"{where}: input '{name}' is a widget but its socket has no 'widget' entry")
        if inp.get("link") is not None:
            if inp["link"] not in links:
                problems.append(f"{where}: input '{name}' uses unknown link {inp['link']}")
            linked.add(name)
    for name, (category, type_, options) in specs.items():
        if category == "required" and not is_widget(type_, options) and name not in linked:
            problems.append(f"{where}: required input '{name}' ({type_name(type_)}) is not connected")
    return problems


def _check_node_widgets(where: str, node: dict, cls: type) -> list[str]:
    problems = []
    values = list(node.get("widgets_values") or [])
    widgets = [(n, t, o) for n, _c, t, o in input_specs(cls) if is_widget(t, o)]
    expected = sum(widget_slots(*w) for w in widgets)
    if len(values) != expected:
        problems.append(
            f"{where}: {len(values)} widgets_values, the class has {expected} widget slots "
            f"({', '.join(w[0] for w in widgets)})"
        )
        return problems
    position = 0
    for name, type_, options in widgets:
        _value, problem = check_value(name, type_, options, values[position])
        if problem:
            problems.append(f"{where}: widget {problem}")
        if type_ == "INT" and widget_slots(name, type_, options) == 2 and values[position + 1] not in CONTROL_VALUES:
            control = values[position + 1]
            problems.append(f"{where}: widget {name}: control-after-generate {control!r} not in {CONTROL_VALUES}")
        position += widget_slots(name, type_, options)
    return problems


def _check_link(link_id: int, link: list, nodes: dict[int, dict], mappings: Mapping[str, type]) -> list[str]:
    if len(link) != 6:
        return [f"link {link_id}: expected [id, from_node, from_slot, to_node, to_slot, type], got {link}"]
    _, src, src_slot, dst, dst_slot, link_type = link
    if src not in nodes or dst not in nodes:
        return [f"link {link_id}: connects missing node {src if src not in nodes else dst}"]
    problems = []
    src_node, dst_node = nodes[src], nodes[dst]
    src_cls, dst_cls = mappings.get(src_node["type"]), mappings.get(dst_node["type"])
    outputs = src_node.get("outputs", [])
    if src_slot >= len(outputs) or link_id not in (outputs[src_slot].get("links") or []):
        problems.append(f"link {link_id}: not listed on output {src_slot} of node {src}")
    inputs = dst_node.get("inputs", [])
    if dst_slot >= len(inputs) or inputs[dst_slot].get("link") != link_id:
        problems.append(f"link {link_id}: not the link of input {dst_slot} of node {dst}")
        return problems
    if src_cls is None or dst_cls is None:
        return problems
    returns = list(src_cls.RETURN_TYPES)
    if src_slot >= len(returns):
        return problems + [f"link {link_id}: node {src} has no output {src_slot}"]
    if link_type != returns[src_slot]:
        problems.append(
            f"link {link_id}: typed {link_type!r}, but output {src_slot} of node {src} is {returns[src_slot]!r}"
        )
    specs = {name: type_ for name, _c, type_, _o in input_specs(dst_cls)}
    name = inputs[dst_slot].get("name")
    if name in specs and not types_compatible(returns[src_slot], type_name(specs[name])):
        problems.append(
            f"link {link_id}: {returns[src_slot]} from node {src} into '{name}' of node {dst}, "
            f"which takes {type_name(specs[name])}"
        )
    return problems


def to_api_prompt(workflow: dict, mappings: Mapping[str, type]) -> dict[str, dict]:
    """The API-format prompt (``{"<id>": {"class_type", "inputs", "_meta"}}``) of a UI-format workflow."""
    problems = check_ui_workflow(workflow, mappings)
    if problems:
        raise WorkflowError(problems)
    links = _links_by_id(workflow)
    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        cls = mappings[node["type"]]
        inputs: dict[str, Any] = {}
        values = list(node.get("widgets_values") or [])
        position = 0
        for name, _category, type_, options in input_specs(cls):
            if is_widget(type_, options):
                inputs[name] = values[position]
                position += widget_slots(name, type_, options)
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                _, src, src_slot, *_ = links[inp["link"]]
                inputs[inp["name"]] = [str(src), src_slot]
        prompt[str(node["id"])] = {
            "class_type": node["type"],
            "inputs": inputs,
            "_meta": {"title": node.get("title") or getattr(cls, "DISPLAY_NAME", node["type"])},
        }
    return prompt


# --------------------------------------------------------------------------------- API prompts
def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def output_nodes(prompt: dict[str, dict], mappings: Mapping[str, type]) -> list[str]:
    """Ids of the prompt's output nodes (``OUTPUT_NODE = True``), which decide what runs."""
    return [nid for nid, node in prompt.items() if getattr(mappings.get(node["class_type"]), "OUTPUT_NODE", False)]


def validate_prompt(prompt: dict[str, dict], mappings: Mapping[str, type]) -> dict[str, dict]:
    """Validate an API-format prompt as ComfyUI's ``validate_prompt`` does, before anything runs.

    Returns a copy whose widget values are converted (``"7"`` → 7 for an INT); raises WorkflowError
    listing ``node <id> (<class>): <reason>`` for every problem.
    """
    problems: list[str] = []
    for nid, node in prompt.items():
        if node.get("class_type") not in mappings:
            problems.append(f"node {nid}: node class {node.get('class_type')!r} does not exist")
    if problems:
        raise WorkflowError(problems)
    if not output_nodes(prompt, mappings):
        raise WorkflowError(["prompt has no output nodes"])
    converted = {nid: {**node, "inputs": dict(node["inputs"])} for nid, node in prompt.items()}
    for nid in _needed_nodes(converted, mappings):
        node = converted[nid]
        cls = mappings[node["class_type"]]
        where = f"node {nid} ({node['class_type']})"
        validate_fn = getattr(cls, "VALIDATE_INPUTS", None)
        validated_names: set[str] = set()
        if validate_fn is not None:
            spec = inspect.getfullargspec(validate_fn)
            validated_names = set(spec.args) | ({"*"} if spec.varkw else set())
        for name, category, type_, options in input_specs(cls):
            if name not in node["inputs"]:
                if category == "required":
                    problems.append(f"{where}: required input '{name}' is missing")
                continue
            value = node["inputs"][name]
            if _is_link(value):
                src = converted.get(value[0])
                if src is None:
                    problems.append(f"{where}: input '{name}' links to missing node {value[0]}")
                    continue
                returns = mappings[src["class_type"]].RETURN_TYPES
                if value[1] >= len(returns):
                    problems.append(
                        f"{where}: input '{name}' links to output {value[1]} of node {value[0]}, "
                        f"which has {len(returns)}"
                    )
                elif not types_compatible(returns[value[1]], type_name(type_)):
                    problems.append(f"{where}: input '{name}' receives {returns[value[1]]}, expects {type_name(type_)}")
                continue
            if name in validated_names or "*" in validated_names:  # ComfyUI then skips range/list checks
                plain = None if combo_options(type_, options) is not None else type_
                value, problem = check_value(name, plain, {}, value)
            else:
                value, problem = check_value(name, type_, options, value)
            if problem:
                problems.append(f"{where}: {problem}")
            node["inputs"][name] = value
        if validate_fn is not None:
            constants = {k: v for k, v in node["inputs"].items() if not _is_link(v)}
            args = constants if "*" in validated_names else {k: v for k, v in constants.items() if k in validated_names}
            result = validate_fn(**args)
            if result is not True:
                problems.append(f"{where}: custom validation failed: {result}")
    if problems:
        raise WorkflowError(problems)
    return converted


def _needed_nodes(prompt: dict[str, dict], mappings: Mapping[str, type]) -> list[str]:
    """Nodes the output nodes depend on, dependencies first (ComfyUI runs nothing else)."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(nid: str) -> None:
        if state.get(nid) == "done":
            return
        if state.get(nid) == "visiting":
            raise WorkflowError([f"node {nid}: the graph has a cycle"])
        state[nid] = "visiting"
        for value in prompt[nid]["inputs"].values():
            if _is_link(value) and value[0] in prompt:
                visit(value[0])
        state[nid] = "done"
        order.append(nid)

    for nid in output_nodes(prompt, mappings):
        visit(nid)
    return order


class Executor:
    """Runs API-format prompts the way ComfyUI's executor does (see the module docstring).

    ``executed`` lists the node ids that actually ran in the last :meth:`run`; ``outputs`` holds every
    node's result tuple, ``ui`` the ``{"ui": ...}`` part returned by output nodes.
    """

    def __init__(self, mappings: Mapping[str, type]):
        self.mappings = mappings
        self._cache: dict[str, tuple[Any, tuple]] = {}
        self.executed: list[str] = []
        self.outputs: dict[str, tuple] = {}
        self.ui: dict[str, dict] = {}

    def run(self, prompt: dict[str, dict]) -> dict[str, tuple]:
        """Validate then execute ``prompt``; returns every executed-or-cached node's outputs by id."""
        prompt = validate_prompt(prompt, self.mappings)
        self.executed, self.outputs, self.ui = [], {}, {}
        signatures: dict[str, Any] = {}
        with torch.inference_mode():
            for nid in _needed_nodes(prompt, self.mappings):
                node = prompt[nid]
                cls = self.mappings[node["class_type"]]
                signatures[nid] = self._signature(nid, node, cls, signatures)
                cached = self._cache.get(nid)
                if cached is not None and cached[0] == signatures[nid]:
                    self.outputs[nid] = cached[1]
                    continue
                self.outputs[nid] = self._execute(nid, node, cls, prompt)
                self._cache[nid] = (signatures[nid], self.outputs[nid])
                self.executed.append(nid)
        return self.outputs

    def _signature(self, nid: str, node: dict, cls: type, signatures: dict[str, Any]) -> Any:
        parts = [node["class_type"]]
        for name, value in sorted(node["inputs"].items()):
            parts.append((name, ("link", signatures[value[0]], value[1]) if _is_link(value) else repr(value)))
        is_changed = getattr(cls, "IS_CHANGED", None)
        if is_changed is not None:
            constants = {k: v for k, v in node["inputs"].items() if not _is_link(v)}
            try:
                parts.append(("IS_CHANGED", repr(is_changed(**constants))))
            except Exception:
                parts.append(("IS_CHANGED", float("nan")))  # ComfyUI: always re-run
        return tuple(parts)

    def _execute(self, nid: str, node: dict, cls: type, prompt: dict[str, dict]) -> tuple:
        if getattr(cls, "INPUT_IS_LIST", False) or any(getattr(cls, "OUTPUT_IS_LIST", ())):
            raise WorkflowError([f"node {nid}: list inputs/outputs are not supported by this test executor"])
        kwargs = {
            name: self.outputs[value[0]][value[1]] if _is_link(value) else value
            for name, value in node["inputs"].items()
        }
        result, ui = _invoke(cls, kwargs, nid, prompt)
        if ui:
            self.ui[nid] = ui
        return result


def _invoke(cls: type, kwargs: dict[str, Any], unique_id: str, prompt: dict) -> tuple[tuple, dict]:
    """Fill hidden inputs, call the node's FUNCTION, split ``{"ui", "result"}``; check the outputs' count."""
    for name, kind in cls.INPUT_TYPES().get("hidden", {}).items():
        kwargs[name] = {"UNIQUE_ID": unique_id, "PROMPT": prompt, "EXTRA_PNGINFO": None}.get(kind)
    result = getattr(cls(), cls.FUNCTION)(**kwargs)
    ui: dict = {}
    if isinstance(result, dict):
        ui = result.get("ui") or {}
        result = result.get("result", ())
    where = f"node {unique_id} ({cls.__name__})"
    if not isinstance(result, tuple):
        raise WorkflowError([f"{where}: returned {type(result).__name__}, not a tuple"])
    if len(result) != len(cls.RETURN_TYPES):
        raise WorkflowError([f"{where}: returned {len(result)} values for {len(cls.RETURN_TYPES)} outputs"])
    return result, ui


def call_node(cls: type, unique_id: str = "1", **inputs: Any) -> tuple[tuple, dict]:
    """Call one node the way ComfyUI's executor does: widget values converted and range-checked first
    (raising WorkflowError like validation would), hidden inputs filled, run under inference mode.
    Returns ``(outputs, ui)``."""
    problems = []
    for name, _category, type_, options in input_specs(cls):
        if name in inputs and is_widget(type_, options):
            inputs[name], problem = check_value(name, type_, options, inputs[name])
            if problem:
                problems.append(problem)
    if problems:
        raise WorkflowError(problems)
    with torch.inference_mode():
        return _invoke(cls, inputs, unique_id, {})
