# Derivation of keel's off-policy test vectors (rlhf-math.md §6 and §10), checked by
# tests/rl_trust_test.cc: TV12 V-trace (IMPALA §4.1, the torchbeast recursion) and TV15 truncated
# importance weights (token and sequence level, truncated or masked) with the decoupled PPO loss.
# Plain PyTorch in float64, independent of keel; prints every number the test expects.
# Run: /usr/bin/python3 tests/reference/rlhf_vectors/vectors_off_policy.py
import torch, math
torch.set_default_dtype(torch.float64)
def p(name, x):
    if isinstance(x, torch.Tensor): x = x.tolist()
    print(f"{name} = {x}")

print("=== TV12 V-trace, T = 4 (time-major recursion of torchbeast vtrace.from_importance_weights) ===")
log_rhos = torch.tensor([0.0, 0.5, -0.5, -1.0]); discounts = torch.tensor([0.99, 0.99, 0.99, 0.0])
r = torch.tensor([0.0, 0.0, 0.0, 1.0]); V = torch.tensor([0.5, 0.6, 0.7, 0.8]); boot = 0.3
rhos = torch.exp(log_rhos); crho = rhos.clamp(max=1.0); cs = rhos.clamp(max=1.0)
Vn = torch.cat([V[1:], torch.tensor([boot])])
deltas = crho * (r + discounts * Vn - V)
acc = 0.0; out = []
for t in reversed(range(4)):
    acc = deltas[t] + discounts[t] * cs[t] * acc; out.append(acc)
vs = torch.tensor(out[::-1]) + V
vsn = torch.cat([vs[1:], torch.tensor([boot])])
pg = rhos.clamp(max=1.0) * (r + discounts * vsn - V)
p("vs", vs); p("pg_adv", pg)
print("on-policy, gamma 1, episode ends at the last token: r = [-0.02, 0.05, -0.01, 1.0], V = 0")
r2 = torch.tensor([-0.02, 0.05, -0.01, 1.0]); acc = 0.0; out = []
for t in reversed(range(4)):
    acc = r2[t] + (1.0 if t < 3 else 0.0) * acc; out.append(acc)
p("vs_on_policy", out[::-1])

print("=== TV15 truncated importance weights, C = 2 ===")
prox = torch.tensor([[-1.0, -0.5, -2.0], [-0.2, -3.0, 0.0]])
mu = torch.tensor([[-1.5, -0.5, -1.0], [-1.2, -3.1, 0.0]])
mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
d = (prox - mu) * mask; ratio = torch.exp(d)
p("token ratio", ratio)
p("token TIS weights", ratio.clamp(max=2.0) * mask)
p("token masked weights", torch.where((ratio > 2.0) | (ratio < 0.5), torch.zeros_like(ratio), ratio) * mask)
seq = torch.exp(d.sum(1))
p("sequence ratio", seq)
p("sequence TIS weights", seq.clamp(max=2.0))
print("decoupled PPO loss, pi_theta = pi_prox + [0.1, -0.1, 0.3 ; 0.0, 0.2, 0], A = [1, -1, 1 ; -1, 1, 0], eps 0.2:")
theta = prox + torch.tensor([[0.1, -0.1, 0.3], [0.0, 0.2, 0.0]])
A = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 0.0]])
rt = torch.exp(theta - prox)
per = torch.max(-A * rt, -A * rt.clamp(0.8, 1.2)) * ratio.clamp(max=2.0)
p("decoupled loss (masked mean)", (per * mask).sum() / mask.sum())
