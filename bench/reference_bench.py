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


def bandwidth():
    n = 1 << 28  # 1 GiB of float32
    a, b = torch.ones(n), torch.empty(n)
    b.copy_(a)

    def best(f):
        t = []
        for _ in range(5):
            t0 = time.perf_counter()
            f()
            t.append(time.perf_counter() - t0)
        return min(t)
    read, copy = best(lambda: a.sum().item()), best(lambda: b.copy_(a))
    print(json.dumps({"bench": "bandwidth", "impl": "python", "threads": torch.get_num_threads(),
                      "read_gbs": round(4 * n / read / 1e9, 2), "copy_gbs": round(8 * n / copy / 1e9, 2)}))


def _cached_step(w, cfg, tok, pos, cache):
    """One KV-cached forward of tok [B, t] at positions pos [B, t], the way an eager user writes it
    (the cache grows with torch.cat); returns the last position's logits."""
    B, t = tok.shape
    gpt2 = cfg["model_type"] == "gpt2"
    d = cfg["n_embd"] if gpt2 else cfg["hidden_size"]
    H = cfg["n_head"] if gpt2 else cfg["num_attention_heads"]
    KV = H if gpt2 else cfg["num_key_value_heads"]
    hd = d // H
    S = t + (cache[0][0].shape[2] if cache[0] is not None else 0)
    allowed = torch.ones(t, S, dtype=torch.bool, device=tok.device).tril(S - t)
    if gpt2:
        x = w["transformer.wte.weight"][tok] + w["transformer.wpe.weight"][pos]
    else:
        x = w["model.embed_tokens.weight"][tok]
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32, device=tok.device) / hd))
        f = pos.float()[..., None] * inv
        emb = torch.cat((f, f), -1)[:, None]
        cos, sin = emb.cos(), emb.sin()
    for i in range(cfg["n_layer"] if gpt2 else cfg["num_hidden_layers"]):
        if gpt2:
            p = f"transformer.h.{i}."
            h = F.layer_norm(x, (d,), w[p + "ln_1.weight"], w[p + "ln_1.bias"])
            q, k, v = (h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]).split(d, dim=-1)
            q, k, v = [z.view(B, t, H, hd).transpose(1, 2) for z in (q, k, v)]
        else:
            p = f"model.layers.{i}."
            h = models._rms(x, w[p + "input_layernorm.weight"], cfg["rms_norm_eps"])
            q = (h @ w[p + "self_attn.q_proj.weight"].t()).view(B, t, H, hd).transpose(1, 2)
            k = (h @ w[p + "self_attn.k_proj.weight"].t()).view(B, t, KV, hd).transpose(1, 2)
            v = (h @ w[p + "self_attn.v_proj.weight"].t()).view(B, t, KV, hd).transpose(1, 2)
            q, k = q * cos + models._rotate_half(q) * sin, k * cos + models._rotate_half(k) * sin
        if cache[i] is not None:
            k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
        cache[i] = (k, v)
        if KV != H:
            k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
        a = models._attend(q, k, v, allowed[None, None]).transpose(1, 2).reshape(B, t, d)
        if gpt2:
            x = x + a @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            h = F.layer_norm(x, (d,), w[p + "ln_2.weight"], w[p + "ln_2.bias"])
            x = x + models.gelu_new(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]) @ w[p + "mlp.c_proj.weight"] \
                + w[p + "mlp.c_proj.bias"]
        else:
            x = x + a @ w[p + "self_attn.o_proj.weight"].t()
            h = models._rms(x, w[p + "post_attention_layernorm.weight"], cfg["rms_norm_eps"])
            x = x + (F.silu(h @ w[p + "mlp.gate_proj.weight"].t()) * (h @ w[p + "mlp.up_proj.weight"].t())) \
                @ w[p + "mlp.down_proj.weight"].t()
    if gpt2:
        x = F.layer_norm(x[:, -1], (d,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"])
        return x @ w["transformer.wte.weight"].t()
    x = models._rms(x[:, -1], w["model.norm.weight"], cfg["rms_norm_eps"])
    return x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).t()


@torch.no_grad()
def decode(model_dir, B=1, N=64):
    """KV-cached sampling of N new tokens for B prompts of 16 random tokens, the model read from
    DIR (Hugging Face layout); the time of one step from runs of 1 and N new tokens. On
    KEEL_BENCH_DEVICE (default cpu); tokens are drawn on the CPU, as keel draws them."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
    import reference
    cfg, w = reference.load_dir(model_dir)
    dev = torch.device(os.environ.get("KEEL_BENCH_DEVICE", "cpu"))
    w = {k: v.float().to(dev) for k, v in w.items()}
    L = cfg.get("n_layer", cfg.get("num_hidden_layers"))
    tokens = torch.randint(0, cfg["vocab_size"], (B, 16)).to(dev)
    gen = torch.Generator().manual_seed(1)

    def run(n):
        cache = [None] * L
        pos = torch.arange(16, device=dev)[None].expand(B, 16)
        logits = _cached_step(w, cfg, tokens, pos, cache)
        for i in range(n):
            logp = torch.log_softmax(logits, -1).cpu()
            nxt = torch.multinomial(logp.exp(), 1, generator=gen)
            logp.gather(1, nxt)
            if i + 1 < n:
                logits = _cached_step(w, cfg, nxt.to(dev), torch.full((B, 1), 16 + i, device=dev), cache)

    def best(n, reps):
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            run(n)
            t.append(time.perf_counter() - t0)
        return min(t)
    run(2)
    prefill, total = best(1, 3), best(N, 2)
    print(json.dumps({"bench": "decode", "impl": "python", "device": str(dev), "model": model_dir, "batch": B, "new_tokens": N,
                      "seconds": round(total, 4), "tokens_per_s": round(B * N / total, 2),
                      "step_s": round((total - prefill) / (N - 1), 5)}))


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("KEEL_BENCH_THREADS", "0")) or os.cpu_count())
    torch.manual_seed(0)
    mode = sys.argv[1] if len(sys.argv) > 1 else "train"
    args = [int(a) if a.isdigit() else a for a in sys.argv[2:]]
    {"sgemm": sgemm, "train": train, "generate": generate, "bandwidth": bandwidth, "decode": decode}[mode](*args)
