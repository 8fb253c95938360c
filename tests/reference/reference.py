"""Reference computations for keel's tests (Debian's python3-torch; never used at run time).

  reference.py make-model FAMILY DIR SEED        write config.json + model.safetensors (HF names);
                                                 FAMILY gpt2 | llama (tiny, test scale) or gpt2-124m |
                                                 llama-135m (real shapes, init-scale weights)
  reference.py logits DIR INPUTS OUT             logits of INPUTS["tokens"], no gradients
  reference.py forward DIR INPUTS OUT            logits, mean loss and its gradients for INPUTS
  reference.py compare DIR_A DIR_B               exit 0 iff both model dirs hold identical tensors
  reference.py sp-encode MODEL TEXTS_JSON        SentencePiece ids, JSON list per text
  reference.py tfevents FILE                     decode a TensorBoard event file, checking CRCs
  reference.py seq-logprobs DIR PAIRS_JSON       summed response log-probs of each pair, one
                                                 unpadded sequence at a time (JSON {chosen, rejected})
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import models  # noqa: E402
import safetensors_io  # noqa: E402


def make_model(family, out, seed):
    cfg = dict(models.CONFIGS[family])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    scale = 0.08 if family in ("gpt2", "llama") else 0.02
    safetensors_io.save(os.path.join(out, "model.safetensors"), models.random_weights(cfg, int(seed), scale), {"format": "pt"})


@torch.no_grad()
def logits(model_dir, inputs_path, out_path):
    cfg, w = load_dir(model_dir)
    tokens = safetensors_io.load(inputs_path)["tokens"].long()
    safetensors_io.save(out_path, {"logits": models.forward({k: v.float() for k, v in w.items()}, cfg, tokens)})


def load_dir(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    return cfg, safetensors_io.load(os.path.join(d, "model.safetensors"))


def forward(model_dir, inputs_path, out_path):
    torch.set_default_dtype(torch.float32)
    cfg, w = load_dir(model_dir)
    w = {k: v.float().requires_grad_(True) for k, v in w.items()}
    inp = safetensors_io.load(inputs_path)
    tokens, targets = inp["tokens"].long(), inp["targets"].long()
    positions = inp["positions"].long() if "positions" in inp else None
    key_mask = inp["key_mask"].bool() if "key_mask" in inp else None
    logits = models.forward(w, cfg, tokens, positions, key_mask)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    out = {"logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for k, v in w.items():
        if v.grad is not None:
            out["grad." + k] = v.grad
    safetensors_io.save(out_path, out)


def compare(a, b):
    ca, wa = load_dir(a)
    cb, wb = load_dir(b)
    bad = []
    for k in sorted(set(wa) | set(wb)):
        if k not in wa or k not in wb:
            bad.append(f"{k}: only in {'A' if k in wa else 'B'}")
        elif wa[k].shape != wb[k].shape or not torch.equal(wa[k], wb[k]):
            bad.append(f"{k}: differs")
    for key in ("model_type", "vocab_size"):
        if ca.get(key) != cb.get(key):
            bad.append(f"config {key}: {ca.get(key)} != {cb.get(key)}")
    print("\n".join(bad) if bad else f"identical: {len(wa)} tensors")
    sys.exit(1 if bad else 0)


def sp_encode(model, texts_json):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=model)
    with open(texts_json) as f:
        texts = json.load(f)
    print(json.dumps([sp.encode(t) for t in texts]))


def _crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


def _fields(buf):
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wt)
        yield field, v


def tfevents(path):
    """Prints {"step": n, "tag": value, ...} per summary event; fails on a bad CRC."""
    data = open(path, "rb").read()
    i = 0
    while i < len(data):
        header = data[i:i + 8]
        (n,) = struct.unpack("<Q", header)
        (hc,) = struct.unpack("<I", data[i + 8:i + 12])
        assert hc == _masked(_crc32c(header)), "length CRC mismatch"
        body = data[i + 12:i + 12 + n]
        (bc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
        assert bc == _masked(_crc32c(body)), "data CRC mismatch"
        i += 16 + n
        ev = {}
        for field, v in _fields(body):
            if field == 2:
                ev["step"] = v
            elif field == 3:
                ev["file_version"] = v.decode()
            elif field == 5:
                for f2, value in _fields(v):
                    tag, val = None, None
                    for f3, x in _fields(value):
                        if f3 == 1:
                            tag = x.decode()
                        elif f3 == 2:
                            (val,) = struct.unpack("<f", x)
                    ev[tag] = val
        print(json.dumps(ev))


def seq_logprobs(model_dir, pairs_json):
    cfg, w = load_dir(model_dir)
    w = {k: v.float() for k, v in w.items()}
    out = {"chosen": [], "rejected": []}
    with open(pairs_json) as f:
        pairs = json.load(f)
    with torch.no_grad():
        for p in pairs:
            for side in ("chosen", "rejected"):
                seq = torch.tensor([p["prompt"] + p[side]])
                logp = torch.log_softmax(models.forward(w, cfg, seq, None, None)[0, :-1], -1)
                targets = seq[0, 1:]
                picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                out[side].append(picked[len(p["prompt"]) - 1:].sum().item())
    print(json.dumps(out))


def png_colours(path):
    """Prints how many distinct RGB colours an 8-bit RGB/RGBA PNG holds (decoded with zlib alone)."""
    import struct
    import zlib
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    i, idat, width, height, channels = 8, b"", 0, 0, 0
    while i < len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        body = data[i + 8:i + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), "only 8-bit RGB or RGBA"
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        i += 12 + n
    raw, stride = zlib.decompress(idat), width * channels
    prev, colours = bytearray(stride), set()
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b, c = prev[x], prev[x - channels] if x >= channels else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 255
            elif ftype == 2:
                line[x] = (line[x] + b) & 255
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        for x in range(0, stride, channels * 7):
            colours.add(bytes(line[x:x + 3]))
        prev = line
    print(len(colours))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"make-model": make_model, "logits": logits, "forward": forward, "compare": compare, "sp-encode": sp_encode,
     "tfevents": tfevents, "seq-logprobs": seq_logprobs, "png_colours": png_colours}[cmd](*args)
