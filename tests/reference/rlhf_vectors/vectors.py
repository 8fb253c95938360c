# Derivation of keel's RLHF test vectors TV1-TV7 (KL estimators k1/k2/k3; per-token rewards with the
# KL penalty and the score at the end; GAE; whitening; the adaptive KL controller; clipped PPO policy
# and value losses; entropy and temperature-scaled log-probs), checked by tests/rl_math_test.cc.
# Plain PyTorch in float64, independent of keel; prints every number the test expects.
# Run: /usr/bin/python3 tests/reference/rlhf_vectors/vectors.py
import torch, math
import torch.nn.functional as F
torch.set_default_dtype(torch.float64)
torch.set_printoptions(precision=8)
def p(name, x):
    if isinstance(x, torch.Tensor): x = x.tolist()
    print(f"{name} = {x}")

print("=== TV1 KL estimators ===")
logp = torch.tensor([-1.0, -2.0, -0.5]); ref = torch.tensor([-1.2, -1.5, -0.5])
d = logp - ref
p("d=logp-ref", d)
p("k1", d); p("k2", 0.5*d**2); p("k3", torch.exp(-d) - 1 + d)

print("=== TV2 per-token reward (OAI/old-TRL/OpenRLHF k1) beta=0.1 score=1.5, 3 tokens ===")
beta=0.1; score=1.5
r = -beta*d; r[-1] += score
p("non_score_reward", -beta*d); p("rewards", r)
# k3 variant
r3 = -beta*(torch.exp(-d)-1+d); r3[-1]+=score; p("rewards_k3", r3)

print("=== TV3 GAE 4-step ===")
def gae(rew, val, gamma, lam):
    T = rew.shape[-1]; last = 0.0; out=[]
    for t in reversed(range(T)):
        nv = val[t+1] if t < T-1 else 0.0
        delta = rew[t] + gamma*nv - val[t]
        last = delta + gamma*lam*last
        out.append(last)
    adv = torch.stack(out[::-1]); return adv, adv+val
rew = torch.tensor([-0.02, 0.05, -0.01, 1.0]); val = torch.tensor([0.5, 0.6, 0.7, 0.8])
for g,l in [(1.0,0.95),(0.99,0.95),(1.0,1.0)]:
    a,ret = gae(rew,val,g,l)
    p(f"adv gamma={g} lam={l}", a); p(f"ret gamma={g} lam={l}", ret)
a,ret = gae(rew,val,1.0,0.95)
# deltas
T=4; deltas=[rew[t] + (val[t+1] if t<T-1 else 0.0) - val[t] for t in range(T)]
p("deltas(g=1)", torch.stack(deltas))
# whitening
def whiten(x, shift_mean=True, unbiased=False):
    m = x.mean(); v = x.var(unbiased=unbiased)
    w = (x-m)*torch.rsqrt(v+1e-8)
    if not shift_mean: w = w + m
    return w
p("adv whitened biased (OAI tf.nn.moments)", whiten(a))
p("adv whitened unbiased (TRL/verl masked_var)", whiten(a, unbiased=True))

print("=== TV4 whitening blog example ===")
R = torch.tensor([[1.2,1.3,1.4],[1.5,1.6,1.7],[1.8,1.9,2.0]])
p("OAI whiten(shift_mean=False) biased", whiten(R, shift_mean=False))
p("TRL masked_whiten(shift_mean=False) unbiased", whiten(R, shift_mean=False, unbiased=True))
p("OAI whiten(shift_mean=True) biased", whiten(R))

print("=== TV5 adaptive KL ===")
def akl(value, current, target, horizon, n):
    e = min(max(current/target - 1, -0.2), 0.2)
    return value*(1 + e*n/horizon), e
v=0.2
for cur in [8.0, 5.0, 6.0, 3.0]:
    nv,e = akl(0.2, cur, 6.0, 10000, 512); print(f"init=0.2 cur={cur}: e={e!r} new={nv!r}")
v = 0.15
seq=[]
for cur in [10.0, 7.0, 4.0]:
    v,e = akl(v, cur, 6.0, 10000, 512); seq.append(v)
print("seq from 0.15 with KL 10,7,4 (n=512):", [repr(x) for x in seq])
nv,e = akl(0.2, 8.0, 6.0, 10000, 256); print("TRL-like n=256 cur=8:", repr(nv))

print("=== TV6 PPO losses ===")
new = torch.tensor([-1.0, -0.5, -2.0, -0.1]); old = torch.tensor([-1.2, -0.4, -1.5, -0.1])
A = torch.tensor([1.0, -1.0, -0.5, 2.0]); eps=0.2
ratio = torch.exp(new-old); p("ratio", ratio)
l1 = -A*ratio; l2 = -A*torch.clamp(ratio,1-eps,1+eps)
p("pg_losses", l1); p("pg_losses2", l2); p("max", torch.max(l1,l2))
p("pg_loss(mean)", torch.max(l1,l2).mean()); p("pg_clipfrac", (l2>l1).double().mean())
p("approxkl=0.5*mean((new-old)^2)", 0.5*((new-old)**2).mean())
vpred = torch.tensor([0.9, 0.2, -0.3, 1.5]); vold = torch.tensor([0.5, 0.3, 0.0, 1.0]); ret = torch.tensor([1.0, 0.0, -0.5, 1.1]); cv=0.2
vclip = torch.max(torch.min(vpred, vold+cv), vold-cv); p("vpredclipped", vclip)
v1 = (vpred-ret)**2; v2=(vclip-ret)**2; p("vf_losses1", v1); p("vf_losses2", v2)
p("vf_loss=0.5*mean(max)", 0.5*torch.max(v1,v2).mean()); p("vf_clipfrac", (v2>v1).double().mean())
p("total loss = pg + 0.1*vf", torch.max(l1,l2).mean() + 0.1*0.5*torch.max(v1,v2).mean())
# dual clip (verl) c=3
pg3 = -A*3.0
dual = torch.where(A<0, torch.min(pg3, torch.max(l1,l2)), torch.max(l1,l2)); p("verl dual-clip per-token", dual); p("verl dual-clip mean", dual.mean())

print("=== TV7 entropy / temperature ===")
logits = torch.tensor([1.0, 2.0, 3.0])
def ent(lg): 
    pr = F.softmax(lg,-1); return torch.logsumexp(lg,-1) - (pr*lg).sum(-1)
p("H(logits)", ent(logits)); p("H(logits/0.7)", ent(logits/0.7))
p("logp(token=2 | logits)", F.log_softmax(logits,-1)[2]); p("logp(token=2 | logits/0.7)", F.log_softmax(logits/0.7,-1)[2])
p("logp(token=0 | logits/0.7)", F.log_softmax(logits/0.7,-1)[0])
