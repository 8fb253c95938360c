"""Plain PyTorch reference of keel's two model families, written from the Hugging Face
definitions (GPT2LMHeadModel, LlamaForCausalLM) and reading Hugging Face tensor names."""
import math

import torch
import torch.nn.functional as F


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _mask(tokens, positions, key_mask):
    """allowed[b, 1, t, s]: causal, and key s is not padding."""
    B, T = tokens.shape
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=tokens.device))[None, None]
    if key_mask is not None:
        causal = causal & key_mask.bool()[:, None, None, :]
    return causal


def _attend(q, k, v, allowed):
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    att = att.masked_fill(~allowed, float("-inf"))
    att = torch.softmax(att, dim=-1)
    att = torch.nan_to_num(att)  # fully padded query rows
    return att @ v


def gpt2_forward(w, cfg, tokens, positions=None, key_mask=None):
    B, T = tokens.shape
    d, H = cfg["n_embd"], cfg["n_head"]
    hd = d // H
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    if positions is None:
        positions = torch.arange(T)[None].expand(B, T)
    allowed = _mask(tokens, positions, key_mask)
    x = w["transformer.wte.weight"][tokens] + w["transformer.wpe.weight"][positions]
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        h = F.layer_norm(x, (d,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(d, dim=-1)
        q, k, v = [t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v)]
        y = _attend(q, k, v, allowed).transpose(1, 2).reshape(B, T, d)
        x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = F.layer_norm(x, (d,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = gelu_new(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (d,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
    return x @ w["transformer.wte.weight"].t()


def _rms(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def llama_forward(w, cfg, tokens, positions=None, key_mask=None):
    B, T = tokens.shape
    d, H = cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = d // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    if positions is None:
        positions = torch.arange(T)[None].expand(B, T)
    allowed = _mask(tokens, positions, key_mask)
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    cos, sin = emb.cos(), emb.sin()
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].t()).view(B, T, H, hd).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].t()).view(B, T, KV, hd).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].t()).view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        rep = H // KV
        k = k[:, :, None].expand(B, KV, rep, T, hd).reshape(B, H, T, hd)
        v = v[:, :, None].expand(B, KV, rep, T, hd).reshape(B, H, T, hd)
        y = _attend(q, k, v, allowed).transpose(1, 2).reshape(B, T, H * hd)
        x = x + y @ w[p + "self_attn.o_proj.weight"].t()
        h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].t()
        u = h @ w[p + "mlp.up_proj.weight"].t()
        x = x + (F.silu(g) * u) @ w[p + "mlp.down_proj.weight"].t()
    x = _rms(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return x @ head.t()


def forward(w, cfg, tokens, positions=None, key_mask=None):
    fn = gpt2_forward if cfg["model_type"] == "gpt2" else llama_forward
    return fn(w, cfg, tokens, positions, key_mask)


def random_weights(cfg, seed, scale=0.08):
    """Random weights in Hugging Face naming; by default larger than init scale so that errors show."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=scale):
        return torch.randn(*shape, generator=g) * std

    def norm_w(n):
        return 1.0 + rnd(n, std=0.1)

    w = {}
    if cfg["model_type"] == "gpt2":
        d, V, P, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg["n_layer"]
        f = cfg.get("n_inner") or 4 * d
        w["transformer.wte.weight"] = rnd(V, d)
        w["transformer.wpe.weight"] = rnd(P, d)
        for i in range(L):
            p = f"transformer.h.{i}."
            w[p + "ln_1.weight"], w[p + "ln_1.bias"] = norm_w(d), rnd(d)
            w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"] = rnd(d, 3 * d), rnd(3 * d)
            w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"] = rnd(d, d), rnd(d)
            w[p + "ln_2.weight"], w[p + "ln_2.bias"] = norm_w(d), rnd(d)
            w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"] = rnd(d, f), rnd(f)
            w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"] = rnd(f, d), rnd(d)
        w["transformer.ln_f.weight"], w["transformer.ln_f.bias"] = norm_w(d), rnd(d)
    else:
        d, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
        H, KV, f = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"]
        hd = d // H
        w["model.embed_tokens.weight"] = rnd(V, d)
        for i in range(L):
            p = f"model.layers.{i}."
            w[p + "input_layernorm.weight"] = norm_w(d)
            w[p + "self_attn.q_proj.weight"] = rnd(H * hd, d)
            w[p + "self_attn.k_proj.weight"] = rnd(KV * hd, d)
            w[p + "self_attn.v_proj.weight"] = rnd(KV * hd, d)
            w[p + "self_attn.o_proj.weight"] = rnd(d, H * hd)
            w[p + "post_attention_layernorm.weight"] = norm_w(d)
            w[p + "mlp.gate_proj.weight"] = rnd(f, d)
            w[p + "mlp.up_proj.weight"] = rnd(f, d)
            w[p + "mlp.down_proj.weight"] = rnd(d, f)
        w["model.norm.weight"] = norm_w(d)
        if not cfg.get("tie_word_embeddings", False):
            w["lm_head.weight"] = rnd(V, d)
    return w


GPT2_CONFIG = {
    "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 97, "n_embd": 32, "n_layer": 2,
    "n_head": 4, "n_inner": None, "n_positions": 64, "n_ctx": 64, "layer_norm_epsilon": 1e-5,
    "activation_function": "gelu_new", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3,
    "tie_word_embeddings": True,
}
LLAMA_CONFIG = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 89, "hidden_size": 48,
    "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "intermediate_size": 80,
    "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": False,
}


# The smallest real shapes (issue 14): GPT-2 small and a Llama-style model with grouped-query
# attention (SmolLM-135M's shape), written with init-scale random weights for the size benchmarks.
GPT2_124M_CONFIG = {k: v for k, v in dict(GPT2_CONFIG, vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024,
                                            n_ctx=1024, bos_token_id=50256, eos_token_id=50256).items()
                    if k != "pad_token_id"}  # as GPT-2's own config: no padding token
LLAMA_135M_CONFIG = dict(LLAMA_CONFIG, vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=2048, rms_norm_eps=1e-5,
                         tie_word_embeddings=True)
CONFIGS = {"gpt2": GPT2_CONFIG, "llama": LLAMA_CONFIG, "gpt2-124m": GPT2_124M_CONFIG, "llama-135m": LLAMA_135M_CONFIG}
