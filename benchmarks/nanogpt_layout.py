"""Does our model train as fast as nanoGPT's layout of the same network?

Times, in one process and in alternating rounds, ``GPTLanguageModel`` against a compact model
written here in nanoGPT's layout (fused QKV projection, ``scaled_dot_product_attention``, GELU MLP,
pre-LayerNorm without biases, and the output layer tied to the token embedding), both at
nanoGPT's CPU shape (4 layers, 4 heads, 128 wide, block 64, batch 12) and trained by the same bare
loop: batch, forward, backward, clipping, AdamW.

Run: ``python benchmarks/nanogpt_layout.py`` (about a minute). The per-round ratio is what
transfers between machines; absolute tokens/s on a shared box move from hour to hour.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from chargpt_tui.model import GPTConfig, GPTLanguageModel

VOCAB, LAYERS, HEADS, WIDTH, BLOCK, BATCH = 65, 4, 4, 128, 64, 12
ROUNDS, STEPS = 8, 25


class NanoAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_attn = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.c_proj = nn.Linear(WIDTH, WIDTH, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, HEADS, C // HEADS).transpose(1, 2)
                   for t in self.c_attn(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class NanoBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(WIDTH, bias=False)
        self.attn = NanoAttention()
        self.ln_2 = nn.LayerNorm(WIDTH, bias=False)
        self.c_fc = nn.Linear(WIDTH, 4 * WIDTH, bias=False)
        self.c_proj = nn.Linear(4 * WIDTH, WIDTH, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class NanoLayout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, WIDTH)
        self.wpe = nn.Embedding(BLOCK, WIDTH)
        self.h = nn.ModuleList(NanoBlock() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(WIDTH, bias=False)
        self.lm_head = nn.Linear(WIDTH, VOCAB, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT does

    def forward(self, idx: torch.Tensor, targets: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))


def adamw(model: nn.Module) -> torch.optim.AdamW:
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                              {"params": others, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99))


def main() -> None:
    torch.manual_seed(0)
    data = torch.randint(0, VOCAB, (100_000,))
    ours = GPTLanguageModel(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=LAYERS,
                                      n_head=HEADS, n_embd=WIDTH, dropout=0.0))
    models = {"chargpt-tui GPTLanguageModel": ours, "nanoGPT layout": NanoLayout()}
    optimizers = {name: adamw(model) for name, model in models.items()}

    def step(name: str) -> None:
        starts = torch.randint(len(data) - BLOCK, (BATCH,)).tolist()
        x = torch.stack([data[i:i + BLOCK] for i in starts])
        y = torch.stack([data[i + 1:i + BLOCK + 1] for i in starts])
        _, loss = models[name](x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models[name].parameters(), 1.0)
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    rates: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(ROUNDS + 1):  # round 0 warms up
        order = list(models) if round_ % 2 == 0 else list(models)[::-1]
        for name in order:
            started = time.perf_counter()
            for _ in range(STEPS):
                step(name)
            if round_:
                rates[name].append(BATCH * BLOCK * STEPS / (time.perf_counter() - started))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, values in rates.items():
        print(f"{name:30s} {statistics.median(values):8.0f} tokens/s "
              f"({min(values):.0f}-{max(values):.0f})")
    ours_rates, nano_rates = rates.values()
    ratios = [a / b for a, b in zip(ours_rates, nano_rates)]
    print(f"ours / nanoGPT layout, per round: median {statistics.median(ratios):.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
