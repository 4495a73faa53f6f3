#!/usr/bin/env python3
"""Independent float64 numpy re-implementation of Qwen3.5 (text) and MiniCPM-V 4.6 (vision tower, merger,
feature splicing), written from the facts in models/tools/README.md, checked against the goldens that
make_fixtures.py wrote. It is an executable spec for the Rust port: every layout detail it relies on
(q_proj query/gate interleave, partial rotary, conv1d channel order, delta-rule recurrence, NaViT patch
packing, window-merger ordering, 2x2 merger concat order, position buckets) is spelled out below.

Run:  python3 models/tools/check_fixtures_numpy.py [FIXTURE_DIR ...]   (default: all four fixtures)
Needs numpy, pillow, safetensors and torch (torch only to read bf16 safetensors).
Prints the max abs difference per golden; anything above 1e-3 fails (typical values are 1e-5).
"""
import json, sys, math
import numpy as np
from safetensors.numpy import load_file
from PIL import Image

def load_weights(d):
    import glob
    import torch  # only for bf16 safetensors
    from safetensors.torch import load_file as lt
    w = {}
    for f in glob.glob(d + "/*.safetensors"):
        if "golden" in f: continue
        for k, v in lt(f).items(): w[k] = v.float().numpy().astype(np.float64)
    return w

def rms(x, w, eps, plus1=True):
    y = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return y * ((1 + w) if plus1 else w)

silu = lambda x: x / (1 + np.exp(-x))
softplus = lambda x: np.log1p(np.exp(x))
sigmoid = lambda x: 1 / (1 + np.exp(-x))

def text_forward(w, cfg, x, pfx):  # x: [T, H] embeddings
    T = x.shape[0]
    eps = cfg["rms_norm_eps"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    rp = cfg["rope_parameters"]; rd = int(hd * rp["partial_rotary_factor"]); theta = rp["rope_theta"]
    inv = 1.0 / theta ** (np.arange(0, rd, 2) / rd)
    ang = np.arange(T)[:, None] * inv[None]
    cos = np.concatenate([np.cos(ang)] * 2, -1); sin = np.concatenate([np.sin(ang)] * 2, -1)
    def rope(t):  # [T, heads, hd]
        r, p = t[..., :rd], t[..., rd:]
        x1, x2 = r[..., :rd // 2], r[..., rd // 2:]
        rot = np.concatenate([-x2, x1], -1)
        return np.concatenate([r * cos[:, None] + rot * sin[:, None], p], -1)
    nk, nv, dk, dv, K = (cfg["linear_num_key_heads"], cfg["linear_num_value_heads"], cfg["linear_key_head_dim"],
                         cfg["linear_value_head_dim"], cfg["linear_conv_kernel_dim"])
    outs = []
    for i, lt_ in enumerate(cfg["layer_types"]):
        p = f"{pfx}layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"], eps)
        if lt_ == "full_attention":
            qg = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, nh, 2 * hd)
            q, gate = qg[..., :hd], qg[..., hd:].reshape(T, nh * hd)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
            q = rope(rms(q, w[p + "self_attn.q_norm.weight"], eps)); k = rope(rms(k, w[p + "self_attn.k_norm.weight"], eps))
            rep = nh // nkv
            o = np.zeros((T, nh, hd))
            for hh in range(nh):
                s = q[:, hh] @ k[:, hh // rep].T / math.sqrt(hd)
                s = s + np.triu(np.full((T, T), -np.inf), 1)
                s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
                o[:, hh] = s @ v[:, hh // rep]
            o = o.reshape(T, nh * hd) * sigmoid(gate)
            x = x + o @ w[p + "self_attn.o_proj.weight"].T
        else:
            a_ = p + "linear_attn."
            qkv = h @ w[a_ + "in_proj_qkv.weight"].T  # [T, 2*nk*dk + nv*dv]
            cw = w[a_ + "conv1d.weight"][:, 0, :]  # [C, K]
            pad = np.concatenate([np.zeros((K - 1, qkv.shape[1])), qkv], 0)
            conv = np.stack([(pad[t:t + K] * cw.T).sum(0) for t in range(T)])
            conv = silu(conv)
            q = conv[:, :nk * dk].reshape(T, nk, dk); k = conv[:, nk * dk:2 * nk * dk].reshape(T, nk, dk)
            v = conv[:, 2 * nk * dk:].reshape(T, nv, dv)
            z = (h @ w[a_ + "in_proj_z.weight"].T).reshape(T, nv, dv)
            beta = sigmoid(h @ w[a_ + "in_proj_b.weight"].T)
            g = -np.exp(w[a_ + "A_log"]) * softplus(h @ w[a_ + "in_proj_a.weight"].T + w[a_ + "dt_bias"])
            r = nv // nk
            q = np.repeat(q, r, axis=1); k = np.repeat(k, r, axis=1)
            l2 = lambda t: t / np.sqrt((t * t).sum(-1, keepdims=True) + 1e-6)
            q = l2(q) / math.sqrt(dk); k = l2(k)
            S = np.zeros((nv, dk, dv)); o = np.zeros((T, nv, dv))
            for t in range(T):
                S = S * np.exp(g[t])[:, None, None]
                kv = np.einsum("hkv,hk->hv", S, k[t])
                delta = (v[t] - kv) * beta[t][:, None]
                S = S + np.einsum("hk,hv->hkv", k[t], delta)
                o[t] = np.einsum("hkv,hk->hv", S, q[t])
            o = rms(o, w[a_ + "norm.weight"], eps, plus1=False) * silu(z)
            x = x + o.reshape(T, nv * dv) @ w[a_ + "out_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + (silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        outs.append(x)
    return rms(x, w[pfx + "norm.weight"], eps), outs

def lm_check(d):
    cfg = json.load(open(d + "/config.json")); cfg_t = cfg.get("text_config", cfg)
    w = load_weights(d)
    pfx = "model.language_model." if "text_config" in cfg else "model."
    head = w.get("lm_head.weight", w[pfx + "embed_tokens.weight"])
    g = load_file(d + "/golden_lm.safetensors")
    ids = g["prefill_ids"]
    xf, _ = text_forward(w, cfg_t, w[pfx + "embed_tokens.weight"][ids], pfx)
    d1 = np.abs(xf @ head.T - g["prefill_logits"]).max()
    xf, outs = text_forward(w, cfg_t, g["embeds_input"].astype(np.float64), pfx)
    d2 = np.abs(xf @ head.T - g["embeds_logits"]).max()
    ids = np.concatenate([g["prompt_ids"], g["generated_ids"]])
    xf, outs = text_forward(w, cfg_t, w[pfx + "embed_tokens.weight"][ids], pfx)
    P = len(g["prompt_ids"])
    d3 = np.abs((xf @ head.T)[P - 1:] - g["step_logits"]).max()
    d4 = max(np.abs(outs[i][:P] - g["prompt_layer_outputs"][i]).max() for i in range(len(outs)))
    print(d, "prefill", d1, "embeds", d2, "steps", d3, "layers", d4)
    FAILS.extend(x for x in (d1, d2, d3, d4) if not x < 1e-3)
    return w, cfg, head

def ln(x, wt, b, eps):
    m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * wt + b

gelu_tanh = lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
from math import erf
gelu = np.vectorize(lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))))

def vision_check(d):
    w, cfg, head = lm_check(d)
    vc = cfg["vision_config"]; D = vc["hidden_size"]; P = vc["patch_size"]; N = vc["image_size"] // P
    nh = vc["num_attention_heads"]; eps = vc["layer_norm_eps"]; mode = cfg["downsample_mode"]
    gv = load_file(d + "/golden_vision.safetensors"); jv = json.load(open(d + "/golden_vision.json"))
    vt = "model.vision_tower."
    def attn(x, pre, blocks):
        q = x @ w[pre + "q_proj.weight"].T + w[pre + "q_proj.bias"]
        k = x @ w[pre + "k_proj.weight"].T + w[pre + "k_proj.bias"]
        v = x @ w[pre + "v_proj.weight"].T + w[pre + "v_proj.bias"]
        hd = D // nh; o = np.zeros_like(x)
        for s0, s1 in blocks:
            for h in range(nh):
                sl = slice(h * hd, (h + 1) * hd)
                s = q[s0:s1, sl] @ k[s0:s1, sl].T / math.sqrt(hd)
                s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
                o[s0:s1, sl] = s @ v[s0:s1, sl]
        return o @ w[pre + "out_proj.weight"].T + w[pre + "out_proj.bias"]
    for e in jv["images"]:
        key = e["key"]
        u8 = np.asarray(Image.open(d + "/" + e["pixel_values_png"])).astype(np.float64)
        pv = (((u8 * (1 / 255)).astype(np.float32) - np.float32(0.5)) / np.float32(0.5)).astype(np.float64)
        pv = pv.reshape(3, P, -1)
        ts = gv[key + ".target_sizes"]
        # patches: column block n -> [3, P, P]
        L = pv.shape[-1] // P
        patches = pv.reshape(3, P, L, P).transpose(2, 0, 1, 3).reshape(L, 3 * P * P)
        x = patches @ w[vt + "embeddings.patch_embedding.weight"].reshape(D, -1).T + w[vt + "embeddings.patch_embedding.bias"]
        pos = []
        for hh, ww in ts:
            # == torch.bucketize(arange(h)/h, arange(1/N, 1, 1/N), right=True) (verified for N in 10, 16, 70
            # and h <= 1024; NOT for every N, e.g. N=100 differs through float rounding)
            bh = np.minimum(np.arange(hh) * N // hh, N - 1)
            bw = np.minimum(np.arange(ww) * N // ww, N - 1)
            pos.append((bh[:, None] * N + bw[None]).reshape(-1))
        x = x + w[vt + "embeddings.position_embedding.weight"][np.concatenate(pos)]
        sizes = [(int(a), int(b)) for a, b in ts]
        def blocks_of(sz):
            out, s = [], 0
            for a, b in sz: out.append((s, s + a * b)); s += a * b
            return out
        ins = cfg["insert_layer_id"] if mode != "4x" else -1
        for li in range(vc["num_hidden_layers"]):
            p = f"{vt}encoder.layers.{li}."
            x = x + attn(ln(x, w[p + "layer_norm1.weight"], w[p + "layer_norm1.bias"], eps), p + "self_attn.", blocks_of(sizes))
            hdn = ln(x, w[p + "layer_norm2.weight"], w[p + "layer_norm2.bias"], eps)
            x = x + gelu_tanh(hdn @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"]) @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
            if li == ins:
                m = vt + "vit_merger."
                res = x
                hdn = ln(x, w[m + "layer_norm1.weight"], w[m + "layer_norm1.bias"], eps)
                order = []; s = 0
                for a, b in sizes:
                    idx = np.arange(a * b).reshape(a // 2, 2, b // 2, 2).transpose(0, 2, 1, 3).reshape(-1) + s
                    order.append(idx); s += a * b
                order = np.concatenate(order)
                hdn = hdn[order]; res = res[order]
                y = res + attn(hdn, m + "self_attn.", [(i, i + 4) for i in range(0, len(order), 4)])
                grp = y.reshape(-1, 4, D); flat = grp.reshape(-1, 4 * D)
                z = ln(flat, w[m + "pre_norm.weight"], w[m + "pre_norm.bias"], eps)
                z = gelu_tanh(z @ w[m + "linear_1.weight"].T + w[m + "linear_1.bias"]) @ w[m + "linear_2.weight"].T + w[m + "linear_2.bias"]
                x = z + grp.mean(1)
                sizes = [(a // 2, b // 2) for a, b in sizes]
        x = ln(x, w[vt + "post_layernorm.weight"], w[vt + "post_layernorm.bias"], eps)
        feats = []; s = 0
        mg = "model.merger.mlp.0."
        for a, b in sizes:
            t = x[s:s + a * b].reshape(a // 2, 2, b // 2, 2, D).transpose(0, 2, 1, 3, 4).reshape(-1, 4 * D); s += a * b
            t = ln(t, w[mg + "pre_norm.weight"], w[mg + "pre_norm.bias"], 1e-6)
            t = gelu(t @ w[mg + "linear_1.weight"].T + w[mg + "linear_1.bias"]) @ w[mg + "linear_2.weight"].T + w[mg + "linear_2.bias"]
            feats.append(t)
        feats = np.concatenate(feats)
        df = np.abs(feats - gv[key + ".features"]).max()
        # splice + LM first logits
        ids = gv[key + ".input_ids"]
        emb = w["model.language_model.embed_tokens.weight"][ids].copy()
        emb[ids == cfg["image_token_id"]] = feats
        xf, _ = text_forward(w, cfg["text_config"], emb, "model.language_model.")
        dl = np.abs((xf @ head.T)[-1] - gv[key + ".first_logits"]).max()
        print("  ", key, "features", df, "first_logits", dl)
        FAILS.extend(x for x in (df, dl) if not x < 1e-3)


FAILS = []
if __name__ == "__main__":
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "fixtures"
    dirs = sys.argv[1:] or [str(root / n) for n in ("qwen35-tiny-a", "qwen35-tiny-b", "minicpmv46-tiny-16x", "minicpmv46-tiny-4x")]
    for d in dirs:
        if "minicpm" in Path(d).name: vision_check(d)
        else: lm_check(d)
    sys.exit("FAILED" if FAILS else 0)
