# Derivation of keel's RLHF test vectors TV13-TV14b (response truncation at a stop token; the full
# masked PPO pipeline: KL-penalised rewards with the score on the last valid token, GAE, whitening),
# TV14 checked by tests/rl_math_test.cc.
# Plain PyTorch in float64, independent of keel; prints every number the test expects.
# Run: /usr/bin/python3 tests/reference/rlhf_vectors/vectors3.py
import torch
torch.set_default_dtype(torch.float64)
def p(name, x):
    if isinstance(x, torch.Tensor): x = x.tolist()
    print(f"{name} = {x}")
print("=== TV13 truncation ===")
def oai_trunc(resp, tok, after, pad):
    m = (resp == tok).long(); m[:, :after] = 0
    mask = (torch.cumsum(m,1) - m).bool()
    return torch.where(mask, torch.full_like(resp,pad), resp)
def oai_valid(resp, tok, after): return (resp[:, after:] == tok).any(-1)
resp = torch.tensor([[5,13,7,13,9],[5,6,7,8,9]])
p("OAI trunc after=0", oai_trunc(resp,13,0,0)); p("OAI valid after=0", oai_valid(resp,13,0))
p("OAI trunc after=2", oai_trunc(resp,13,2,0)); p("OAI valid after=2", oai_valid(resp,13,2))
def first_true(b):
    L=b.size(-1); z = L*(~b).long() + torch.arange(L); return z.min(-1).values
def trl_trunc(resp, stop, pad):
    ti = first_true(resp==stop).unsqueeze(-1); idx = torch.arange(resp.shape[1]).view(1,-1)
    return torch.masked_fill(resp, idx > ti, pad)
PAD=0
pr_ = trl_trunc(resp, 13, PAD); p("TRL truncate_response stop=13", pr_)
seq_len = first_true(pr_ == PAD) - 1; p("TRL sequence_lengths (first pad - 1)", seq_len)
print("=== TV14 full mini PPO pipeline (canonical placement: score at last valid token incl. EOS) ===")
# one sequence, response length 5, EOS at index 3, index 4 is padding
logp = torch.tensor([-1.0, -0.8, -1.2, -0.3, 0.0]); ref = torch.tensor([-1.1, -0.9, -1.0, -0.4, 0.0])
val = torch.tensor([0.2, 0.3, 0.25, 0.4, 0.0]); mask = torch.tensor([1.,1.,1.,1.,0.])
beta=0.05; score=2.0
kl = (logp-ref)*mask; r = -beta*kl; last = int(mask.nonzero()[-1]); r[last] += score
p("kl", kl); p("rewards", r)
def gae(rew,v,g,l,mask):
    v=v*mask; rew=rew*mask; T=len(rew); last=0.0; out=[]
    for t in reversed(range(T)):
        nv = v[t+1] if t<T-1 else 0.0
        d = rew[t]+g*nv-v[t]; last = d+g*l*last; out.append(last)
    a=torch.stack(out[::-1]); return a, a+v
a,ret = gae(r,val,1.0,0.95,mask); p("adv (pre-whiten)", a); p("returns", ret)
m = mask.bool(); am = a[m]
w = (a - am.mean())*torch.rsqrt(am.var(unbiased=True)+1e-8); w = w*mask
p("adv masked-whitened (unbiased, TRL/verl), zeroed outside mask", w)
print("=== TV14b TRL experimental PPOTrainer placement (pad != eos) ===")
# response tokens [7, 8, 9, EOS=13, PAD=0]
resp2 = torch.tensor([[7,8,9,13,0]]); sl = first_true(resp2==0)-1; p("sequence_length", sl)
L=5; idx=torch.arange(L).view(1,-1); padding_mask = idx > sl.unsqueeze(1); p("padding_mask", padding_mask)
slp1 = sl+1; padding_mask_p1 = idx > slp1.unsqueeze(1); p("padding_mask_p1", padding_mask_p1)
actual_end = torch.where(slp1 < L, slp1, sl); p("actual_end (score index)", actual_end)
