"""Stand-in for `vllm/v1/worker/gpu_model_runner.py`: `GPUModelRunner.load_model()` sets
`self.model` (here a two-layer Llama-shaped torch model, with vLLM's module names) and
`execute_model(scheduler_output)` runs one forward over every scheduled token."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import nn

HIDDEN = 32
VOCAB = 256


class LlamaAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv_proj = nn.Linear(HIDDEN, 3 * HIDDEN)
        self.o_proj = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_proj(hidden).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(-1, -2) / HIDDEN**0.5, dim=-1)
        return self.o_proj(weights @ v)


class LlamaMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(HIDDEN, 4 * HIDDEN)
        self.down_proj = nn.Linear(2 * HIDDEN, HIDDEN)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(hidden).chunk(2, dim=-1)
        return self.down_proj(torch.nn.functional.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = LlamaAttention()
        self.mlp = LlamaMLP()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.self_attn(hidden)
        return hidden + self.mlp(hidden)


class LlamaModel(nn.Module):
    def __init__(self, num_layers: int = 2) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList([LlamaDecoderLayer() for _ in range(num_layers)])
        self.norm = nn.LayerNorm(HIDDEN)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)
        for layer in self.layers:
            hidden = layer(hidden)
        return self.norm(hidden)


class LlamaForCausalLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = LlamaModel()
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model(input_ids))


@dataclass
class ModelRunnerOutput:
    req_ids: List[str]
    sampled_token_ids: Dict[str, int] = field(default_factory=dict)


class GPUModelRunner:
    def __init__(self, model_name: str = "stand-in", device: str = "cpu") -> None:
        self.model_name = model_name
        self.device = torch.device(device)
        self.model = None

    def load_model(self, load_dummy_weights: bool = False) -> None:
        torch.manual_seed(0)
        self.model = LlamaForCausalLM().to(self.device).eval()

    def get_model(self) -> nn.Module:
        return self.model

    @torch.inference_mode()
    def execute_model(self, scheduler_output, token_ids: Dict[str, List[int]]) -> ModelRunnerOutput:
        """One forward over every scheduled token of every request, flattened into one
        sequence as vLLM does (the stand-in has no KV cache and no attention masking), then
        the greedy next token of each request."""
        req_ids, flat, ends = [], [], []
        for req_id, count in scheduler_output.num_scheduled_tokens.items():
            flat.extend(token_ids[req_id][-count:])
            ends.append(len(flat) - 1)
            req_ids.append(req_id)
        if not flat:
            return ModelRunnerOutput([])
        logits = self.model(torch.tensor([flat], device=self.device))
        next_tokens = logits[0, ends].argmax(dim=-1).tolist()
        return ModelRunnerOutput(req_ids, dict(zip(req_ids, next_tokens)))
