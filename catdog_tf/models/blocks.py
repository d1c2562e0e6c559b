"""Blocks of a backbone graph: where they start, which layers are the top k, and the cut
between a frozen bottom (whose activations can be cached) and a trainable top.

`spec` is a registry entry (catdog_tf.models.registry.Backbone): its `block_id` maps a layer
name to its block, or its `block_end` regex names the layers that end blocks. This module
walks the graph through Keras's `_keras_history` (private, but the only record of a functional
graph's nodes); tests/test_backbones.py checks every registered backbone against it.
"""

from __future__ import annotations

import re

import keras



def _graph(model: keras.Model):
    """This model's layers in topological order, with each layer's parents and output tensor.

    Walks back from the model outputs through `_keras_history`, so only this model's
    nodes count even when layers are shared with other models (e.g. after a split).
    """
    order, parents, outputs, done = [], {}, {}, set()
    # Iterative depth-first post-order (deep models would exceed Python's recursion limit).
    stack = [(t, False) for t in reversed(model.outputs)]
    while stack:
        tensor, expanded = stack.pop()
        layer, node_index, _ = tensor._keras_history
        if id(layer) in done:
            continue
        node = layer._inbound_nodes[node_index]
        ins = list(node.input_tensors)
        if not expanded:
            stack.append((tensor, True))
            stack.extend((t, False) for t in reversed(ins) if id(t._keras_history[0]) not in done)
            continue
        done.add(id(layer))
        parents[id(layer)] = [t._keras_history[0] for t in ins]
        outs = list(node.output_tensors)
        outputs[id(layer)] = outs[0] if len(outs) == 1 else None
        order.append(layer)
    return order, parents, outputs


def _cut_indices(order, parents) -> set[int]:
    """Indices i whose output is a single-tensor boundary: no edge jumps over layer i.

    In a topological order, layer i separates input from output exactly when every
    edge leaving layers 0..i-1 ends at or before i.
    """
    index = {id(l): i for i, l in enumerate(order)}
    last_use = list(range(len(order)))
    for child_i, layer in enumerate(order):
        for p in parents[id(layer)]:
            last_use[index[id(p)]] = max(last_use[index[id(p)]], child_i)
    cuts, reach = set(), -1
    for i in range(len(order)):
        if reach <= i:
            cuts.add(i)
        reach = max(reach, last_use[i])
    return cuts


def block_boundaries(spec, model: keras.Model) -> list:
    """Layers (or bare ops) whose outputs are the inputs of the blocks, bottom to top."""
    order, parents, outputs = _graph(model)
    cuts = sorted(i for i in _cut_indices(order, parents) if outputs[id(order[i])] is not None)
    if spec.block_end is not None:
        ends = [i for i, l in enumerate(order) if re.fullmatch(spec.block_end, l.name)]
        bad = [order[i].name for i in ends if i not in cuts]
        if bad:
            raise ValueError(f"{spec.name}: block ends {bad} are not single-tensor cuts")
        bounds = ends[:-1]  # the last block's end only feeds the head
    else:
        first_of = {}
        for i, layer in enumerate(order):
            bid = spec.block_id(layer.name)
            if bid is not None and bid not in first_of:
                first_of[bid] = i
        bounds = []
        for bid, first in first_of.items():
            before = [c for c in cuts if c < first]
            if not before:
                raise ValueError(f"{spec.name}: block {bid} has no single-tensor input")
            bounds.append(before[-1])
    if not bounds or any(b >= a for b, a in zip(bounds, bounds[1:])):
        raise ValueError(f"{spec.name}: could not find distinct block boundaries in {model.name}")
    return [order[i] for i in bounds]

def num_blocks(spec, model: keras.Model) -> int:
    return len(block_boundaries(spec, model))

def top_cut(spec, model: keras.Model, k: int):
    bounds = block_boundaries(spec, model)
    if not 1 <= k <= len(bounds):
        raise ValueError(f"{spec.name}: k must be in 1..{len(bounds)} (number of blocks), got {k}")
    return bounds[-k]

def top_block_layers(spec, model: keras.Model, k: int) -> list[keras.layers.Layer]:
    """All layers of the top k blocks (everything after their input cut), in graph order.

    Bare ops in the graph (ConvNeXt's `x + y` adds) are not layers and are skipped.
    """
    if k == 0:
        return []
    cut = top_cut(spec, model, k)
    order, _, _ = _graph(model)
    return [op for op in order[order.index(cut) + 1:] if isinstance(op, keras.layers.Layer)]


def all_layers(layer):
    yield layer
    for sub in getattr(layer, "layers", []) or []:
        yield from all_layers(sub)


def set_trainable_top_blocks(model: keras.Model, spec, k: int) -> list[keras.layers.Layer]:
    """Freeze `model`, then make the top k blocks trainable; BatchNorm stays frozen.

    Frozen BatchNorm layers run in inference mode in Keras 3, so the ImageNet
    statistics survive fine-tuning on small batches. Returns the layers made trainable.
    """
    top = top_block_layers(spec, model, k)  # validates k before anything changes
    model.trainable = True
    for layer in model.layers:
        layer.trainable = False
    unfrozen = []
    for layer in top:
        layer.trainable = True
        for sub in all_layers(layer):
            if isinstance(sub, keras.layers.BatchNormalization):
                sub.trainable = False
        if not isinstance(layer, keras.layers.BatchNormalization):
            unfrozen.append(layer)
    return unfrozen


def split_at_top_blocks(model: keras.Model, spec, k: int, bottom_name: str | None = None,
                        top_name: str | None = None) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) with top(bottom(x)) == model(x), cut at the input of the top k blocks.

    Both share the layers (and weights) of `model`; cache bottom's outputs and train top.
    """
    cut = top_cut(spec, model, k)
    _, _, outputs = _graph(model)
    tensor = outputs[id(cut)]
    bottom = keras.Model(model.inputs, tensor, name=bottom_name or f"{model.name}_bottom{k}")
    top = keras.Model(tensor, model.outputs[0] if len(model.outputs) == 1 else model.outputs,
                      name=top_name or f"{model.name}_top{k}")
    return bottom, top
