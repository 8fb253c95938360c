# Derivation of keel's RLHF test vectors TV6b and TV8-TV12 (PPO dual clip; the DPO family: sigmoid,
# hinge, IPO, cDPO, robust and SimPO losses with their rewards, margins and accuracies; sequence
# log-probs with the shift and -100 labels; the Bradley-Terry reward model loss, reward normalisation
# and the last-token index; GRPO and RLOO advantages; V-trace), checked by tests/rl_math_test.cc
# (TV12, V-trace, has no keel counterpart yet).
# Plain PyTorch in float64, independent of keel; prints every number the test expects.
# Run: /usr/bin/python3 tests/reference/rlhf_vectors/vectors2.py
import torch, math
import torch.nn.functional as F
torch.set_default_dtype(torch.float64)
def p(name, x):
    if isinstance(x, torch.Tensor): x = x.tolist()
    print(f"{name} = {x}")
print("=== TV6b dual clip ===")
A=torch.tensor([-1.0]); r=torch.exp(torch.tensor([1.5])); l1=-A*r; l2=-A*torch.clamp(r,0.8,1.2)
p("ratio",r); p("standard max",torch.max(l1,l2)); p("dual-clip",torch.min(-A*3.0, torch.max(l1,l2)))

print("=== TV8 DPO family ===")
pc = torch.tensor([-10.0, -8.0]); pr = torch.tensor([-12.0, -7.0])
rc = torch.tensor([-10.5, -8.2]); rr = torch.tensor([-11.0, -7.5])
lc = torch.tensor([5.0, 4.0]); lr = torch.tensor([4.0, 6.0])  # completion lengths (tokens)
beta = 0.1
h = (pc - pr) - (rc - rr); p("h (logits)", h)
sig = -F.logsigmoid(beta*h); p("sigmoid per-example", sig); p("sigmoid mean", sig.mean())
crew = beta*(pc-rc); rrew = beta*(pr-rr)
p("rewards/chosen per-ex", crew); p("rewards/rejected per-ex", rrew)
p("rewards/chosen", crew.mean()); p("rewards/rejected", rrew.mean())
p("rewards/margins", (crew-rrew).mean()); p("rewards/accuracies", (crew>rrew).double().mean())
p("hinge", torch.relu(1-beta*h)); p("hinge mean", torch.relu(1-beta*h).mean())
p("ipo raw (h-1/(2b))^2", (h-1/(2*beta))**2); p("ipo raw mean", ((h-1/(2*beta))**2).mean())
havg = (pc-rc)/lc - (pr-rr)/lr; p("h_avg (per-token normalised)", havg)
p("ipo len-normalised", (havg-1/(2*beta))**2); p("ipo len-norm mean", ((havg-1/(2*beta))**2).mean())
eps=0.1
cdpo = -(1-eps)*F.logsigmoid(beta*h) - eps*F.logsigmoid(-beta*h); p("cDPO eps=0.1", cdpo); p("cDPO mean", cdpo.mean())
rob = (-(1-eps)*F.logsigmoid(beta*h) + eps*F.logsigmoid(-beta*h))/(1-2*eps); p("robust eps=0.1", rob); p("robust mean", rob.mean())
# SimPO
b2=2.0; g=1.0
avgc = pc/lc; avgr = pr/lr; p("avg logp chosen", avgc); p("avg logp rejected", avgr)
simpo = -F.logsigmoid(b2*(avgc-avgr) - g); p("SimPO beta=2 gamma=1", simpo); p("SimPO mean", simpo.mean())
# TRL CPO simpo form
logits = (avgc-avgr) - g/b2; p("TRL-CPO simpo check", -F.logsigmoid(b2*logits))
# single-example headline
x = -F.logsigmoid(torch.tensor(0.15)); p("-logsigmoid(0.15)", x)

print("=== TV9 sequence logp with shift and -100 ===")
# vocab 4, sequence length 5: prompt 2 tokens, completion 3 tokens
input_ids = torch.tensor([[2, 1, 3, 0, 1]])
labels = torch.tensor([[-100, -100, 3, 0, 1]])
logits = torch.tensor([[[0.1, 0.2, 0.3, 0.4],
                        [1.0, 0.0, -1.0, 2.0],
                        [0.5, 0.5, 0.5, 0.5],
                        [2.0, 1.0, 0.0, -1.0],
                        [9.0, 9.0, 9.0, 9.0]]])
lab = labels[:,1:].clone(); lg = logits[:,:-1,:]; mask = lab != -100; lab[~mask]=0
per = torch.gather(lg.log_softmax(-1), 2, lab.unsqueeze(2)).squeeze(2)
p("per_token_logps (positions 1..4 predict tokens 2..5)", per); p("mask", mask)
p("sum logp (DPO)", (per*mask).sum(-1)); p("mean logp (IPO/SimPO)", (per*mask).sum(-1)/mask.sum(-1))
p("SFT CE loss (mean over completion tokens)", F.cross_entropy(lg.reshape(-1,4), labels[:,1:].reshape(-1), ignore_index=-100))
# individual terms
ls = lg.log_softmax(-1)
p("log_softmax[pos1][3]", ls[0,1,3]); p("log_softmax[pos2][0]", ls[0,2,0]); p("log_softmax[pos3][1]", ls[0,3,1])

print("=== TV10 reward model ===")
rc_ = torch.tensor([1.0, 0.2, -0.3]); rr_ = torch.tensor([0.5, 0.4, -1.3]); m = torch.tensor([0.0, 0.1, 0.5])
p("BT loss no margin per-ex", -F.logsigmoid(rc_-rr_)); p("BT loss no margin mean", (-F.logsigmoid(rc_-rr_)).mean())
p("BT loss with margin per-ex", -F.logsigmoid(rc_-rr_-m)); p("BT loss with margin mean", (-F.logsigmoid(rc_-rr_-m)).mean())
p("accuracy", (rc_>rr_).double().mean())
p("center_rewards 0.01 term", 0.01*((rc_+rr_)**2).mean())
# OAI normalisation
samples = torch.tensor([1.0, 2.0, 3.0, 6.0])
mu = samples.mean(); sd = torch.sqrt((samples**2).mean() - mu**2)
gain = 1.0/sd; bias = 0.0 - gain*mu
p("mu, sd(population)", [mu.item(), sd.item()]); p("gain,bias", [gain.item(), bias.item()]); p("normalised", gain*samples+bias)
# last non pad
def lastnonpad(ids, pad):
    nm = (ids != pad).int(); ti = torch.arange(ids.shape[-1]); return (ti*nm).argmax(-1)
p("last non-pad right-padded [5,7,9,0,0]", lastnonpad(torch.tensor([[5,7,9,0,0]]),0))
p("last non-pad left-padded [0,0,5,7,9]", lastnonpad(torch.tensor([[0,0,5,7,9]]),0))
p("pad==eos trap [5,7,2,2,2] pad=eos=2", lastnonpad(torch.tensor([[5,7,2,2,2]]),2))

print("=== TV11 GRPO / RLOO ===")
grp = torch.tensor([1.0, 0.0, 0.0, 1.0]); grp2 = torch.tensor([0.2, 0.5, 0.9, 0.4])
for gname, g in [("g1",grp),("g2",grp2)]:
    mu = g.mean(); sd = g.std(unbiased=True)
    p(f"{gname} mean,std(unbiased)", [mu.item(), sd.item()])
    p(f"{gname} GRPO adv eps=1e-4 (TRL)", (g-mu)/(sd+1e-4))
    p(f"{gname} GRPO adv eps=1e-6 (verl)", (g-mu)/(sd+1e-6))
    p(f"{gname} Dr.GRPO adv (no std)", (g-mu))
    k = g.numel(); base = (g.sum()-g)/(k-1)
    p(f"{gname} RLOO baseline", base); p(f"{gname} RLOO adv", g-base); p(f"{gname} k/(k-1)*(r-mean)", k/(k-1)*(g-mu))
lp = torch.tensor([-0.5, -1.0]); lref = torch.tensor([-0.7, -0.8])
p("GRPO per-token k3 KL exp(ref-lp)-(ref-lp)-1", torch.exp(lref-lp)-(lref-lp)-1)
# GRPO per-token loss one sequence, one iteration (ratio=1): -(A) + beta*kl
A=0.866025; beta=0.04
kl = torch.exp(lref-lp)-(lref-lp)-1
p("GRPO per-token loss (ratio=1,A=0.866025,beta=0.04)", -A + beta*kl); p("seq mean", (-A+beta*kl).mean())

print("=== TV12 V-trace ===")
T=4
log_rhos = torch.tensor([0.0, 0.5, -0.5, -1.0])
disc = torch.tensor([0.99, 0.99, 0.99, 0.0])  # terminal at last step
rewards = torch.tensor([0.0, 0.0, 0.0, 1.0]); values = torch.tensor([0.5, 0.6, 0.7, 0.8]); boot = torch.tensor(0.3)
rhos = torch.exp(log_rhos); crho = torch.clamp(rhos, max=1.0); cs = torch.clamp(rhos, max=1.0)
vtp1 = torch.cat([values[1:], boot.unsqueeze(0)])
deltas = crho*(rewards + disc*vtp1 - values)
acc = 0.0; res=[]
for t in reversed(range(T)):
    acc = deltas[t] + disc[t]*cs[t]*acc; res.append(acc)
vs = torch.stack(res[::-1]) + values
vsp1 = torch.cat([vs[1:], boot.unsqueeze(0)])
pg = torch.clamp(rhos, max=1.0)*(rewards + disc*vsp1 - values)
p("rhos", rhos); p("clipped rho / c", crho); p("deltas", deltas); p("vs", vs); p("pg_adv", pg)
# explicit sum check for v_0
v0 = values[0] + sum( (torch.prod(disc[:t]) if t>0 else 1.0) * (torch.prod(cs[:t]) if t>0 else 1.0) * deltas[t] for t in range(T))
p("explicit v_0", v0)
# on-policy check: log_rhos=0, disc=gamma, lam=1 => vs equals n-step return (GAE lambda=1 returns)
disc2 = torch.tensor([1.0,1.0,1.0,1.0]); r2 = torch.tensor([-0.02,0.05,-0.01,1.0])
vtp1b = torch.cat([values[1:], torch.tensor([0.0])])
d2 = r2 + disc2*vtp1b - values; acc=0.0; res=[]
for t in reversed(range(T)):
    acc = d2[t] + disc2[t]*acc; res.append(acc)
p("on-policy vs (gamma=1, boot=0) == GAE(lam=1) returns", torch.stack(res[::-1])+values)
