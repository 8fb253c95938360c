"""The preference buffer from Python with h5py alone, following the layout documented in
replay/preference_buffer.h and docs/formats.md (tests only; never used at run time).

  preference_h5.py write PATH PAIRS_JSON   write the pairs [{prompt, chosen, rejected, chosen_reward,
                                           rejected_reward, policy_version, source}] as h5py would by
                                           default (int64 token arrays, variable-length strings)
  preference_h5.py dump PATH               print the buffer's attributes and pairs as JSON
"""
import json
import math
import sys

import h5py
import numpy as np

SIDES = ("prompt", "chosen", "rejected")


def write(path, pairs_json):
    with open(pairs_json) as f:
        pairs = json.load(f)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "keel-preferences"
        f.attrs["format_version"] = 1
        f.attrs["tokenizer"] = ""
        for side in SIDES:
            seqs = [p[side] for p in pairs]
            f[side + "/tokens"] = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
            f[side + "/offsets"] = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
        if "chosen_reward" in pairs[0]:
            nan = float("nan")
            f["meta/chosen_reward"] = np.asarray([nan if p["chosen_reward"] is None else p["chosen_reward"] for p in pairs],
                                                 dtype=np.float32)
            f["meta/rejected_reward"] = np.asarray(
                [nan if p["rejected_reward"] is None else p["rejected_reward"] for p in pairs], dtype=np.float32)
            f["meta/policy_version"] = np.asarray([p.get("policy_version", -1) for p in pairs], dtype=np.int64)
            src = [p.get("source", "").encode() for p in pairs]
            f["meta/source"] = np.frombuffer(b"".join(src), dtype=np.uint8)
            f["meta/source_offsets"] = np.concatenate([[0], np.cumsum([len(s) for s in src])]).astype(np.int64)


def nan_none(x):
    x = float(x)
    return None if math.isnan(x) else x


def dump(path):
    out = {}
    with h5py.File(path, "r") as f:
        out["attrs"] = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
                        for k, v in f.attrs.items()}
        off = {s: f[s + "/offsets"][:] for s in SIDES}
        tok = {s: f[s + "/tokens"][:] for s in SIDES}
        n = len(off["prompt"]) - 1
        pairs = []
        for i in range(n):
            p = {s: tok[s][off[s][i]:off[s][i + 1]].tolist() for s in SIDES}
            if "prompt/text" in f:
                for s in SIDES:
                    t, o = f[s + "/text"], f[s + "/text_offsets"]
                    p[s + "_text"] = bytes(t[o[i]:o[i + 1]]).decode()
            if "meta" in f:
                p["chosen_reward"] = nan_none(f["meta/chosen_reward"][i])
                p["rejected_reward"] = nan_none(f["meta/rejected_reward"][i])
                p["policy_version"] = int(f["meta/policy_version"][i])
                so = f["meta/source_offsets"]
                p["source"] = bytes(f["meta/source"][so[i]:so[i + 1]]).decode()
            if "ref" in f:
                p["ref_chosen"] = float(f["ref/chosen_logprob"][i])
                p["ref_rejected"] = float(f["ref/rejected_logprob"][i])
            pairs.append(p)
        out["pairs"] = pairs
        out["dtypes"] = {s: str(f[s + "/tokens"].dtype) for s in SIDES}
    print(json.dumps(out))


if __name__ == "__main__":
    {"write": write, "dump": dump}[sys.argv[1]](*sys.argv[2:])
