"""Python PyTorch eager baseline for bench/keel_bench.cc: the same model (GPT-2 family), the same
step and the same thread count, printed as JSON lines. Usage mirrors keel_bench."""
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
import models  # noqa: E402


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def config(d, L, V, P):
    return {"model_type": "gpt2", "vocab_size": V, "n_embd": d, "n_layer": L, "n_head": d // 64, "n_inner": None,
            "n_positions": P, "layer_norm_epsilon": 1e-5}


def sgemm():
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    s = time.perf_counter() - t
    print(json.dumps({"bench": "sgemm", "impl": "python", "gflops": round(2 * n ** 3 * 10 / s / 1e9, 1)}))


def train(d=512, L=8, T=256, B=8, V=8192):
    rss0 = rss_mb()
    cfg = config(d, L, V, T)
    w = {k: (v * 0.25).requires_grad_(True) for k, v in models.random_weights(cfg, 0).items()}
    opt = torch.optim.AdamW(list(w.values()), lr=1e-4, weight_decay=0.1)
    tokens, targets = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))

    def step():
        opt.zero_grad()
        logits = models.gpt2_forward(w, cfg, tokens)
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(5):
        step()
    s = (time.perf_counter() - t) / 5
    params = sum(v.numel() for k, v in w.items() if k != "transformer.wpe.weight")
    flops = 6 * params * B * T + 12 * L * B * T * T * d
    print(json.dumps({"bench": "train", "impl": "python", "d": d, "layers": L, "seq": T, "batch": B, "vocab": V,
                      "step_s": round(s, 4), "tokens_per_s": round(B * T / s, 1),
                      "model_gflops": round(flops / s / 1e9, 1), "peak_rss_mb": round(rss_mb(), 1),
                      "rss_growth_mb": round(rss_mb() - rss0, 1)}))


@torch.no_grad()
def generate(d=256, L=4, B=8, N=128):
    V = 8192
    cfg = config(d, L, V, 512)
    w = models.random_weights(cfg, 0)
    H, hd = d // 64, 64
    prompts = [[5] * (16 + b) for b in range(B)]
    P = max(len(p) for p in prompts)
    tokens = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts], dtype=torch.bool)
    gen = torch.Generator().manual_seed(1)

    def forward(tok, pos, keys_valid, cache):
        # tok, pos [B, t]; keys_valid [B, S]; cache: list of (k, v) per layer, grown with torch.cat
        Bn, t = tok.shape
        x = w["transformer.wte.weight"][tok] + w["transformer.wpe.weight"][pos]
        S = keys_valid.shape[1]
        causal = torch.ones(t, S, dtype=torch.bool).tril(S - t)
        bias = torch.zeros(Bn, 1, t, S).masked_fill(~(causal[None, None] & keys_valid[:, None, None, :]), -1e9)
        for i in range(L):
            p = f"transformer.h.{i}."
            h = F.layer_norm(x, (d,), w[p + "ln_1.weight"], w[p + "ln_1.bias"])
            q, k, v = (h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]).split(d, dim=-1)
            q, k, v = [z.view(Bn, t, H, hd).transpose(1, 2) for z in (q, k, v)]
            if cache[i] is not None:
                k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
            cache[i] = (k, v)
            a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd) + bias, -1) @ v
            x = x + a.transpose(1, 2).reshape(Bn, t, d) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            h = F.layer_norm(x, (d,), w[p + "ln_2.weight"], w[p + "ln_2.bias"])
            x = x + models.gelu_new(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]) @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        x = F.layer_norm(x, (d,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"])
        return x[:, -1] @ w["transformer.wte.weight"].t()

    def run():
        cache = [None] * L
        pos = (mask.long().cumsum(1) - 1).clamp(min=0)
        valid = mask.clone()
        logits = forward(tokens, pos, valid, cache)
        nxt_pos = pos[:, -1:] + 1
        for _ in range(N):
            logp = torch.log_softmax(logits, -1)
            nxt = torch.multinomial(logp.exp(), 1, generator=gen)
            logp.gather(1, nxt)
            valid = torch.cat([valid, torch.ones(B, 1, dtype=torch.bool)], 1)
            logits = forward(nxt, nxt_pos, valid, cache)
            nxt_pos = nxt_pos + 1

    run()
    t = time.perf_counter()
    for _ in range(3):
        run()
    s = (time.perf_counter() - t) / 3
    print(json.dumps({"bench": "generate", "impl": "python", "d": d, "layers": L, "batch": B, "new_tokens": N,
                      "seconds": round(s, 4), "tokens_per_s": round(B * N / s, 1)}))


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("KEEL_BENCH_THREADS", "0")) or os.cpu_count())
    torch.manual_seed(0)
    mode, args = (sys.argv[1] if len(sys.argv) > 1 else "train"), [int(a) for a in sys.argv[2:]]
    {"sgemm": sgemm, "train": train, "generate": generate}[mode](*args)
