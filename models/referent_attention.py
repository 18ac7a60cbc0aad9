"""Attention supervision: read one decoder layer's log attention weights during a forward pass.

The embedded backbone's heads attend to every object of an image alike (`benchmarks/attention_selectivity.py`), so
it cannot tell which object a question names, and relations stay at chance. Pretraining with `relation_reading`
teaches heads of one layer to attend, at `<ans>`, to each object the prompt names (a labeled seed scene says
where it is) with the loss -log(weight): the log comes from a log-softmax, so a weight of about 0 still has a
gradient. This module registers that attention function with transformers (`AttentionInterface`, eager masks)
and gives a context manager that switches a Llama model to it and collects one layer's log weights:

    with attention_log_weights(network.lm, layer=3) as captured:
        logits = network(...).logits
    log_weights = captured[0]   # batch x heads x queries x keys
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
from transformers.models.llama.modeling_llama import repeat_kv

LOG_WEIGHTS_ATTENTION = "asg_eager_log_weights"


def eager_attention_with_log_weights(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention that returns the log of its weights (log-softmax of the masked scores) beside its output."""
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    log_weights = torch.log_softmax(scores.float(), dim=-1)
    weights = torch.nn.functional.dropout(log_weights.exp().to(query.dtype), p=dropout, training=module.training)
    output = torch.matmul(weights, value_states).transpose(1, 2).contiguous()
    return output, log_weights


AttentionInterface.register(LOG_WEIGHTS_ATTENTION, eager_attention_with_log_weights)
ALL_MASK_ATTENTION_FUNCTIONS.register(LOG_WEIGHTS_ATTENTION, eager_mask)


def _attention_module(lm: torch.nn.Module, layer: int) -> torch.nn.Module:
    """The self-attention module of decoder layer `layer`, under a peft wrapper or not."""
    suffix = f"layers.{layer}.self_attn"
    for name, module in lm.named_modules():
        if name.endswith(suffix) and hasattr(module, "q_proj"):
            return module
    raise ValueError(f"the model has no decoder layer {layer}")


@contextlib.contextmanager
def attention_log_weights(lm: torch.nn.Module, layer: int) -> Iterator[list[torch.Tensor]]:
    """Within: every layer of the Llama model `lm` runs eager attention, and each forward pass appends layer
    `layer`'s log attention weights (batch x heads x queries x keys) to the yielded list; outside, the model's
    attention implementation is restored."""
    config = lm.config
    previous = config._attn_implementation
    captured: list[torch.Tensor] = []
    hook = _attention_module(lm, layer).register_forward_hook(lambda module, inputs, output: captured.append(output[1]))
    config._attn_implementation = LOG_WEIGHTS_ATTENTION
    try:
        yield captured
    finally:
        hook.remove()
        config._attn_implementation = previous
