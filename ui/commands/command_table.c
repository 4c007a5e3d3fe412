/* THE command table. Every front end dispatches through it; `help`, Tab
 * completion and docs/commands.md are generated from it (tests/test_docs.sh
 * fails when docs/commands.md drifts). Entries are grouped by what they work on:
 * load and look, quantize and measure, transform, model, session. */
#include <stddef.h>
#include "commands.h"

/* Entries without sub-commands or typed options leave the trailing fields
 * (subs, opts, run) zero rather than spelling out three NULLs each. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"


static const char *const side_words[] = {"x", "w", NULL};
static const char *const quant_words[] = {"w4a4", "w4a8", "w4a16", "w8a8", "w4a4kv4", "w16a16kv16", "w:sym", "w:asym",
                                          "a:sym", "a:asym", "kv:asym", "w:g128", "a:token", "w:clip=search",
                                          "ao:head", "w:sym-full",
                                          NULL};

const command command_table[] = {
    /* ---- load and look ---- */
    {"load", 1, 2, CMD_LOGGED | CMD_LONG, COMPLETE_FILE, NULL, "load FILE [PREFIX]",
     "load tensors from .npy, .safetensors or a llama2.c checkpoint",
     "Loads every tensor of FILE into the workspace as float32 (f16/bf16/f64 are converted).\n"
     "Names: .npy -> the file's base name; safetensors -> its tensor names; llama2.c ->\n"
     "Meta names (layers.0.attention.wq, layers.0.feed_forward.w2, ...). PREFIX is\n"
     "prepended to every name. A truncated or lying file is refused with the reason.",
     cmd_load},
    {"layers", 0, 0, 0, COMPLETE_NONE, NULL, "layers",
     "list the workspace's tensors with their shapes",
     "Lists every tensor in the workspace; W/X marks the current layer's weight and activation.",
     cmd_layers},
    {"use", 1, 2, CMD_LOGGED, COMPLETE_TENSOR, NULL, "use WEIGHT [ACTIVATION] | use -x ACTIVATION",
     "select the layer to work on: a weight and/or its input activations",
     "WEIGHT is out x in, ACTIVATION is tokens x in (same number of input channels).\n"
     "Each layer keeps its own transform stack when you switch away and back.",
     cmd_use},
    {"info", 0, 0, 0, COMPLETE_NONE, NULL, "info",
     "show the current layer, its shapes, quantizers and transform count",
     "Shows the current layer's tensors, shapes, the weight and activation quantizers\n"
     "and how many transforms are on its stack.",
     cmd_info},
    {"stats", 0, 3, 0, COMPLETE_WORDS, side_words, "stats [x|w] [CHANNEL | top K]",
     "per-channel min/max/absmax/mean/std/kurtosis and the outlier count",
     "Statistics of the columns (input channels) of the current activation (x, default\n"
     "when present) or weight (w): the top K channels by absmax (default 10) or one CHANNEL,\n"
     "with the median channel absmax and the number of outlier channels (see `set outlier_k`).",
     cmd_stats},
    {"outliers", 0, 2, 0, COMPLETE_WORDS, side_words, "outliers [x|w] [K]",
     "list channels whose absmax exceeds K x the median channel absmax",
     "A channel is an outlier when its absmax > K x median absmax over channels\n"
     "(K defaults to `set outlier_k`, 8).",
     cmd_outliers},
    {"hist", 0, 3, 0, COMPLETE_WORDS, side_words, "hist [x|w] [CHANNEL|all] [BINS]",
     "histogram of one channel or of the whole tensor",
     "Bins are automatic (Freedman-Diaconis, or Sturges when the IQR is 0) unless BINS\n"
     "or `set bins N` fixes them.",
     cmd_hist},
    {"heatmap", 0, 1, 0, COMPLETE_WORDS, side_words, "heatmap [x|w]",
     "heatmap of |values|, rows x channels, max-pooled to the terminal",
     "Shades |x| of the current activation (tokens x channels) or weight, max-pooled so\n"
     "every outlier survives the downsampling, with a legend of the value range.",
     cmd_heatmap},

    /* ---- quantize and measure ---- */
    {"quant", 0, 8, CMD_LOGGED, COMPLETE_WORDS, quant_words,
     "quant [wBaB[kvB]] [w:OPTS] [a:OPTS] [ao:OPTS] [kv:OPTS]",
     "show or set the weight, activation and KV-cache quantizers (and quantize the model)",
     "Bits: w4a8kv4 sets 4-bit weights, 8-bit activations, 4-bit KV cache (2..8; 16 = not\n"
     "quantized). A bits word without kv turns KV quantization off; options alone keep the widths.\n"
     "OPTS (comma-separated): sym | sym-full (the extra code -2^(b-1), scale max(-min/2^(b-1),\n"
     "max/(2^(b-1)-1))) | asym, tensor | row (= channel for W, token for X, head for KV) | gN\n"
     "(groups of N columns), clip=R (fixed clipping ratio 0.01..1) | clip=search (per group, the\n"
     "ratio minimising the error), clip-norm=P (that error is sum |x-Q(x)|^P, default 2),\n"
     "clip-grid=N (ratios 1, 0.99, .. 1-0.01(N-1); default 51). Each of w:, a:, ao:, kv: once.\n"
     "Example: quant w4a4 w:sym,row a:asym,token,clip=0.9\n"
     "preset=paper-w4a4kv4 | paper-w4a16kv16: the OSTQuant code's quantizers (docs/ostquant.md):\n"
     "w:sym-full,row,clip=search,clip-norm=2.4,clip-grid=80 a:asym,token ao:asym,head kv:asym,row\n"
     "(W4A16KV16: a16 kv16); the words given override the preset.\n"
     "With a model loaded the model is quantized too: weights round-to-nearest from the float\n"
     "weights (a group size that does not divide a linear's width uses the closest divisor, e.g.\n"
     "g32 -> g43 for hidden 172), activations of every linear per token, K and V per head per\n"
     "token. quant w16a16kv16 makes it float again.",
     NULL, NULL, quant_opts, cmd_quant},
    {"qsur", 0, 0, 0, COMPLETE_NONE, NULL, "qsur",
     "QSUR of the current layer's activation and weight (log10 and per-dimension)",
     "Quantization space utilization rate: volume of the alpha-confidence ellipsoid of the\n"
     "rows over the volume of the smallest quantization cube holding it (docs/qsur.md).\n"
     "Shown as log10 QSUR and QSUR^(1/d); after transforms also the value before them.\n"
     "Incremental: transforms never redo the eigen-decomposition.",
     cmd_qsur},
    {"error", 0, 0, 0, COMPLETE_NONE, NULL, "error",
     "quantization error of the current layer: MSE, relative Frobenius, SQNR, output error",
     "Fake-quantizes X with the activation quantizer and W with the weight quantizer and\n"
     "reports each one's MSE, relative Frobenius error and SQNR (dB), and the layer output\n"
     "error ||X W^T - Q(X') Q(W')^T||_F / ||X W^T||_F: the quantized current (transformed)\n"
     "layer against the original float output X W^T.",
     cmd_error},
    {"compare", 0, 1, 0, COMPLETE_WORDS, side_words, "compare [x|w]",
     "before/after the transform stack: QSUR, SQNR, output error and channel absmax",
     "A table of every metric on the original layer and after its transforms, with the\n"
     "change, and the channel absmax bars of both states on one scale ('!' = outlier).",
     cmd_compare},
    {"gptq", 0, 0, CMD_LOGGED | CMD_LONG, COMPLETE_NONE, NULL, "gptq [model]",
     "GPTQ the current layer's weight on its activations (or every linear of the model)",
     "GPTQ (Frantar et al. 2022): Hessian H = X^T X from the layer's activations, damping\n"
     "P x mean(diag H) (default 0.01), Cholesky of H^-1, blocked column updates of 128;\n"
     "`act` quantizes columns in decreasing H_jj order (groups stay static). `static-groups`:\n"
     "group maps fitted on the original weight, not on the error-fed one (the GPTQ code's\n"
     "--static-groups; GPU and CPU then give the same codes, see gpu.md). Reports the\n"
     "weight-only output error ||XW^T - XQ^T|| / ||XW^T|| of RTN and of GPTQ.\n"
     "`gptq model`: every linear of the model, sequentially: layer by layer, for each group of\n"
     "linears sharing an input ({wq,wk,wv} {wo} {w1,w3} {w2}) the calibration sequences (`calib`)\n"
     "are run again through the partly quantized model and the group is quantized on the captured\n"
     "input; shows each linear's output error against RTN. Run it after `quant`, which it refines.\n"
     "The forward stops after the group's block and keeps only its input: memory is one group's\n"
     "input whatever the depth. layers=N: only the first N blocks (the others keep their form).\n"
     "float-acts: capture those inputs with the activation/KV quantizers off (online rotations on),\n"
     "as the QuaRot/OSTQuant code calibrates GPTQ.",
     NULL, gptq_subs, gptq_opts, cmd_gptq},
    {"quantease", 0, 1, CMD_LOGGED | CMD_LONG, COMPLETE_NONE, NULL, "quantease [model] [SWEEPS]",
     "QuantEase coordinate descent on the current layer; objective per sweep",
     "Cyclic coordinate descent on ||XW^T - XQ^T||^2 with closed-form one-column updates\n"
     "(no matrix inversion), from RTN or GPTQ, SWEEPS passes (default 3); the objective\n"
     "never increases. outliers=P keeps a fraction P of the weights in float, chosen and\n"
     "updated jointly, and reports their memory overhead.\n"
     "`quantease model ...`: every linear, sequentially as `gptq model`.",
     NULL, quantease_subs, quantease_opts, cmd_quantease, quantease_args},
    {"awq", 0, 1, CMD_LOGGED | CMD_LONG, COMPLETE_NONE, NULL, "awq [model] [GRID]",
     "AWQ activation-aware channel scaling search on the current layer",
     "Searches s_j = mean|X_j|^a over a grid of GRID+1 exponents in [0,1] (default 20),\n"
     "quantizes W diag(s), unscales, and keeps the a with the lowest output error.\n"
     "`awq model [GRID]`: every linear, sequentially as `gptq model`; the scale stays inside\n"
     "the fake-quantized weight quant(W diag(s)) diag(1/s) (exact for weight-only quantization).",
     NULL, awq_subs, awq_opts, cmd_awq, awq_args},
    {"cqe", 0, 0, CMD_LOGGED | CMD_LONG, COMPLETE_NONE, NULL, "cqe [model]",
     "CQE+ on the current layer: learn a banded D in W' = U(S+D)V^T through the quantizer",
     "CQE+ (arXiv 2407.15508) in the SVD basis W = U S V^T (dgesdd): quantizes\n"
     "W' = W + U_r D V_r^T, D zero outside the band |i-j| <= B (default 1; B=0 is LSI's\n"
     "diagonal-only D) and the top R singular triplets (default 0 = all), trained with Adam\n"
     "for N steps (default 100; lr X times the rms singular value, default 0.001) through the\n"
     "straight-through estimator on ||XW^T - XQ(W')^T||^2; keeps the best D (D = 0 is RTN).\n"
     "`cqe model ...`: cross-layer learning: the D's of every linear of K consecutive blocks\n"
     "(window=K, default 2) trained jointly on the MSE between the float and the quantized\n"
     "model's residual stream after the window, on the `calib` sequences (8 unless `seqs=`).\n"
     "`cqe model window=0 ...`: the layer scope per linear, sequentially as `gptq model`.\n"
     "See docs/methods.md.",
     NULL, cqe_subs, cqe_opts, cmd_cqe},

    {"ostquant", 1, 20, CMD_LOGGED | CMD_LONG, COMPLETE_NONE, NULL,
     "ostquant layer|model|resume|status [OPTIONS]",
     "OSTQuant: learn orthogonal + scaling transforms through the quantizers (STE)",
     "layer  the current layer: R = H B (Hadamard, then learned block-diagonal orthogonal\n"
     "       blocks of B channels) and S minimising ||XW^T - Q(X S^-1 R) Q(W S R)^T||;\n"
     "       pushes a scale step and a dense rotation step onto the layer's stack.\n"
     "model  the loaded model with the session's w/a/kv quantizers: global residual rotation,\n"
     "       per-kv-head value/output rotation+scale, scalings at every norm->linear and up->down\n"
     "       pair, online Hadamard before w2 (and on q/k when kv < 16); WOMI init; then the\n"
     "       model is replaced by the fused, weight-quantized one (docs/ostquant.md).\n"
     "       calib (tokens or .txt) defaults to the file of `calib`, with its seqs. Ctrl-C\n"
     "       stops training and keeps the model from before the command (an error says so);\n"
     "       keep-partial=1: the best transforms so far replace it instead (the report says so).\n"
     "       The OSTQuant code's protocol: preset=paper (100 steps, batch 32 (16 weight-only),\n"
     "       lr 0.0169 / 0.00179, and:) wquant=off (weights float while training; GPTQ after)\n"
     "       clip-grad=1 lr-decay=linear adam-norm=canonical stabilize=10 (geoopt's Riemannian\n"
     "       Adam: its scaling; its stabilize doubles the momentum every 10 steps)\n"
     "       keep=last shuffle=epoch qk-scale=on smooth=code; the options given override it.\n"
     "       Live QSUR: every qsur-every steps (0 off), at the start and at the last step, log10\n"
     "       QSUR and QSUR^(1/d) of every transformed layer (q/k/v, wo, w1/w3 and w2 inputs, and\n"
     "       their stacked fused weights) on qsur-tokens calibration tokens: a line per\n"
     "       measurement at the prompt, a live table in the TUI.\n"
     "resume M more steps (default: the rest of the saved run) from a state file, on the\n"
     "       model the state started from (load it and set the same `quant` first; another\n"
     "       model is refused).\n"
     "status the last run's QSUR: the measurements during training and the per-layer table\n"
     "       of the session model (`set alpha|cube|qsur_method` apply; docs/ostquant.md).",
     NULL, ostquant_subs},

    {"export", 1, 1, CMD_LONG, COMPLETE_FILE, NULL, "export DIR",
     "write the session model (fused, quantized) and a report into a new directory",
     "hf       DIR/config.json + DIR/model.safetensors; __metadata__ records the activation/KV\n"
     "         quantizers and the weight quantizer, so `model load DIR` runs the same model.\n"
     "         Written tensor by tensor; more than shard=SIZE (default 5GB; B, KB, MB, GB)\n"
     "         goes to model-0000K-of-0000N.safetensors + model.safetensors.index.json.\n"
     "         dtype= of the float tensors (default f32).\n"
     "llama2c  DIR/model.bin (weights only). both: all three.\n"
     "runtime  plain (default): the files must run exactly in any Llama runtime, so a model\n"
     "         that needs an online rotation (before w2 or on q,k) is refused; qsur: format=hf\n"
     "         only, the online rotations are recorded in __metadata__ for qsur (or a runtime\n"
     "         that applies them as docs/export.md says).\n"
     "weights  fake: the fake-quantized values as F32; int: NAME.qweight (I8/U8 codes),\n"
     "         NAME.scales (F32), NAME.zeros (asymmetric) per linear; gptq: the GPTQ/AutoGPTQ\n"
     "         packed int32 layout (4 or 8 bits) with quantize_config.json (docs/export.md).\n"
     "Report: DIR/report.md and DIR/report.json: settings, per-linear log10 QSUR of the\n"
     "captured calibration inputs and weights and output error, before (RTN on the original\n"
     "model) and after, and perplexities on eval=FILE (float, before, after, reloaded export;\n"
     "seqs=N sequences, default 16). Written into DIR.tmp-XXXXXX, renamed at the end: a\n"
     "failure leaves no DIR. DIR must not exist (or be empty).",
     NULL, NULL, export_opts, cmd_export},

    /* ---- transform ---- */
    {"rotate", 1, 4, CMD_LOGGED | CMD_LONG, COMPLETE_NONE, NULL, "rotate KIND [SEED]",
     "rotate the layer: X' = X R, W' = W R (the product X W^T is unchanged)",
     "hadamard   fast Walsh-Hadamard for 2^k channels; for n = 2^k m a Kronecker product with\n"
     "           an m x m Hadamard (Sylvester, Paley I/II, Williamson: 172 = 4 x 43) where one\n"
     "           exists, else with a seeded random orthogonal m x m block (86 = 2 x 43 is such a\n"
     "           size); the output says which\n"
     "rhadamard  the same after random +-1 signs (QuaRot's randomized Hadamard)\n"
     "random     Haar-random orthogonal matrix (QR of a Gaussian matrix, sign-fixed)\n"
     "pca        eigenvectors of the activation covariance (needs X)\n"
     "SEED defaults to the session's next seed; the log records the seed used. After the\n"
     "step: QSUR, the output error and the equivalence error ||XW^T - X'W'^T|| / ||XW^T||.\n"
     "model hadamard  QuaRot-style rotation of the whole model, each step exact in float:\n"
     "           norm: fold RMSNorm gains into the next linears (classifier untied);\n"
     "           resid: residual stream x -> x Q, randomized Hadamard Q fused into E, readers W Q,\n"
     "           writers (wo, w2) Q^T W; w2: online Hadamard on w2's input, w2 -> w2 H;\n"
     "           heads: per value head, fused into wv rows and wo columns; qk: online Hadamard\n"
     "           on q and k (rotated K cache). steps=LIST picks some (default all:\n"
     "           norm,resid,w2,heads,qk, but without w2 when activations are at 16 bits and\n"
     "           without qk when the KV cache is: the online steps only serve their quantization,\n"
     "           and a model without them exports to any Llama runtime).\n"
     "           Plans use SEED, SEED+1 (w2), SEED+2 (heads), SEED+3 (qk).",
     NULL, rotate_subs, NULL, cmd_rotate, rotate_args},
    {"scale", 1, 2, CMD_LOGGED, COMPLETE_NONE, NULL, "scale smooth|file",
     "scale channels: X' = X S^-1, W' = W S (SmoothQuant or a vector from a file)",
     "smooth [ALPHA]  SmoothQuant: s_j = max|X_j|^ALPHA / max|W_j|^(1-ALPHA), ALPHA in [0,1]\n"
     "                (default 0.5); needs both X and W\n"
     "file FILE       s from a .npy/.safetensors file holding one tensor of d positive values\n"
     "QSUR of X changes by exactly the log-determinant of the scaling (shown as sum ln s).",
     NULL, scale_subs},
    {"undo", 0, 0, CMD_LOGGED, COMPLETE_NONE, NULL, "undo",
     "undo the last transform (exactly: the previous floats are restored)",
     "Restores the state before the last transform from its snapshot (bit-exact).",
     cmd_undo},
    {"redo", 0, 0, CMD_LOGGED, COMPLETE_NONE, NULL, "redo",
     "redo the last undone transform",
     "A new transform after undo drops the undone steps.",
     cmd_redo},
    {"reset", 0, 0, CMD_LOGGED, COMPLETE_NONE, NULL, "reset",
     "undo every transform of the current layer",
     "Back to the original tensors; `redo` can step forward again.",
     cmd_reset},
    {"stack", 0, 0, 0, COMPLETE_NONE, NULL, "stack",
     "list the current layer's transforms, undone ones marked",
     "One line per step with what was used (e.g. which Hadamard construction), the\n"
     "cumulative log-determinant of the scalings and the snapshot memory held for undo.",
     cmd_stack},

    /* ---- model ---- */
    {"model", 1, 3, CMD_LOGGED | CMD_LONG, COMPLETE_NONE, NULL,
     "model load PATH | model info | model save-hf DIR [F32|F16|BF16]",
     "load a Llama model (llama2.c file or HF directory), show it, or export it",
     "load     a llama2.c checkpoint (file) or a Hugging Face Llama directory (config.json +\n"
     "         safetensors; an `export` directory also restores its online rotations and\n"
     "         activation/KV quantizers from the metadata, and dequantizes int weights). The model is the source of truth: its weights stay in the\n"
     "         file's dtype, memory-mapped (docs/scale.md), and appear in the workspace as views\n"
     "         under Meta names (layers.N.attention.wq, ...) so `layers`, `use`, `stats` work on\n"
     "         them; a view becomes a float32 copy only when used, and the views are put again\n"
     "         after every command that changes the weights (rotate model, smoothquant).\n"
     "         Layer-level transforms never change the model.\n"
     "info     config, quantization, rotations, smoothing and calibration of the model\n"
     "save-hf  config.json + model.safetensors of the float weights (atomically; DIR is created)",
     NULL, model_subs},
    {"calib", 1, 1, CMD_LOGGED | CMD_LONG, COMPLETE_FILE, NULL, "calib FILE",
     "capture the model's calibration activations into the workspace",
     "Runs calibration sequences through the FLOAT model and stores the input of every linear as\n"
     "layers.N.attention.in, layers.N.attention.wo.in, layers.N.feed_forward.in,\n"
     "layers.N.feed_forward.w2.in (and K, V as layers.N.attention.k/v).\n"
     "FILE.txt (text, tokenized with the session tokenizer, BOS as its post-processor says):\n"
     "samples windows of seqlen tokens at seeded uniform random offsets, as GPTQ's data loaders\n"
     "(defaults 128 x 2048, or the model's length when shorter). A token file: its first\n"
     "samples (= seqs) sequences of seqlen (defaults 16 x 256; .u16, .u32 or int32 .npy,\n"
     "docs/model.md). max_tokens=N keeps a seeded\n"
     "random subset of token positions. `use layers.0.feed_forward.w2` then pairs the weight\n"
     "with its input. gptq/quantease/awq/cqe model, smoothquant, ostquant and export use these\n"
     "settings. Never calibrate on evaluation data.\n"
     "layers=A-B (or N) keeps those layers only, and the forward stops after the last;\n"
     "only=NAME one capture kind: a linear (layers.N.feed_forward.w2, its input), a kind\n"
     "(feed_forward.w2.in: every layer of the range) or `current` (the selected layer).\n"
     "The memory the capture takes is shown before it runs and reported.",
     NULL, NULL, calib_opts, cmd_calib},
    {"ppl", 1, 1, CMD_LONG, COMPLETE_FILE, NULL, "ppl FILE",
     "perplexity of the model (with its current quantization) on a text or token file",
     "FILE.txt: the papers' protocol (GPTQ, QuaRot, OSTQuant on WikiText-2): the whole file\n"
     "tokenized once (BOS first when the tokenizer's post-processor adds one), cut into\n"
     "non-overlapping windows of seqlen (default 2048, or the model's length when shorter; the\n"
     "tail is dropped), each window run on its own, perplexity = exp(mean NLL over every\n"
     "predicted token: seqlen - 1 per window). max-tokens=N uses the first N tokens.\n"
     "A token file (.u16, .u32 or int32 .npy): sequences of seqlen (default 256). seqs=N: the\n"
     "first N windows only.\n"
     "Scored with the model as it is: quantized weights, activation and KV quantization,\n"
     "online rotations. Ctrl-C stops it. On the GPU (`set device`), the model is uploaded for\n"
     "the command; dtype=bf16 (default) runs bf16 GEMMs with fp32 accumulation, dtype=fp32\n"
     "matches the CPU to ~1e-7.",
     NULL, NULL, ppl_opts, cmd_ppl},
    {"smoothquant", 0, 1, CMD_LOGGED | CMD_LONG, COMPLETE_NONE, NULL, "smoothquant [ALPHA]",
     "SmoothQuant the model: per-channel scales folded into the producers of each input",
     "For each group of linears sharing an input, s_j = max|X_j|^ALPHA / max|W_j|^(1-ALPHA)\n"
     "(default 0.5) from the calibration activations (`calib` first); W -> W diag(s) and the\n"
     "1/s goes into: attention_norm (wq/wk/wv), ffn_norm (w1/w3), the rows of wv (wo's input is\n"
     "softmax(.)V; with GQA one scale per kv channel) and the rows of w3 (w2's input is\n"
     "silu(w1 h) * w3 h; skipped when an online rotation sits before w2). Exact in float.",
     NULL, NULL, NULL, cmd_smoothquant, smoothquant_args},

    /* ---- text ---- */
    {"tokenizer", 1, 2, CMD_LOGGED, COMPLETE_NONE, NULL, "tokenizer load|info",
     "load a tokenizer (tokenizer.json or llama2.c tokenizer.bin) or describe the session's",
     "load  a Hugging Face tokenizer.json (byte-level BPE of the Llama-3 kind, or SentencePiece\n"
     "      BPE with byte fallback of the Llama-2 kind) or a llama2.c tokenizer.bin. `model load\n"
     "      DIR` loads DIR/tokenizer.json by itself (tokenizer.bin beside a llama2.c file).\n"
     "info  kind, number of ids, BOS (what ppl/calib/generate put first) and EOS.\n"
     "Encoding equals the Hugging Face tokenizers library id for id (docs/text.md).",
     NULL, tokenizer_subs},
    {"tokenize", 1, 1, 0, COMPLETE_FILE, NULL, "tokenize TEXT|FILE",
     "the token ids of a text (or a file) with each token's piece",
     "Encodes TEXT (quote it) or the contents of FILE when it names a file, without BOS, and\n"
     "lists position, id, the vocabulary spelling (Ġ/▁ mark a space) and the text each token\n"
     "stands for, so you see what the model sees. show=N rows (default 64); JSON has every id.",
     NULL, NULL, text_show_opts, cmd_tokenize},
    {"detokenize", 1, -1, 0, COMPLETE_NONE, NULL, "detokenize IDS",
     "the text of a list of token ids (1,2,3 or [1, 2, 3] or 1 2 3), with each piece",
     "Decodes the ids with the tokenizer's decoder (byte tokens become bytes, the leading\n"
     "space marker is dropped as the decoder says) and lists each id's piece.",
     NULL, NULL, text_show_opts, cmd_detokenize},
    {"generate", 1, 1, CMD_LONG, COMPLETE_NONE, NULL, "generate \"PROMPT\"",
     "continue a prompt with the session model as it is (quantized, transformed), streaming",
     "Encodes PROMPT (BOS first when the tokenizer adds one), runs it through the model and\n"
     "samples n tokens one at a time with the KV cache: temp=0 greedy (argmax); temp > 0\n"
     "softmax(logits / temp) restricted to the top-p nucleus. Stops at the end-of-text token.\n"
     "The text streams as it comes (the TUI's output panel too). Uses the model exactly as\n"
     "ppl does: compare `generate` before and after `quant` to see what quantization does to\n"
     "the text. Ctrl-C stops it and keeps what was generated.",
     NULL, NULL, generate_opts, cmd_generate},
    {"eval", 1, 1, CMD_LONG, COMPLETE_FILE, NULL, "eval FILE.jsonl",
     "zero-shot multiple-choice accuracy (acc, acc_norm per task and overall)",
     "One task item per line: {\"context\": TEXT, \"choices\": [TEXT, ...], \"label\": K,\n"
     "\"task\": NAME (optional)}. Each choice is scored by the log-likelihood of its tokens after\n"
     "the context's (no BOS, as lm-evaluation-harness); acc counts the argmax, acc_norm the\n"
     "argmax of log-likelihood / characters of the choice (lm-evaluation-harness's definitions).\n"
     "context and choices may also be arrays of token ids (no tokenizer needed; acc_norm then\n"
     "divides by the token count); one context per choice as an array of strings (WinoGrande).\n"
     "limit=N: the first N items. docs/eval.md converts ARC,\n"
     "HellaSwag, PIQA, WinoGrande, BoolQ to this schema.",
     NULL, NULL, eval_opts, cmd_eval},

    /* ---- session ---- */
    {"help", 0, 1, 0, COMPLETE_COMMAND, NULL, "help [COMMAND]",
     "list commands, or show one command's usage and details",
     "Without an argument, lists every command with a one-line summary.\n"
     "With a command name, shows its usage line and this longer help.",
     cmd_help},
    {"set", 0, 2, CMD_LOGGED, COMPLETE_NONE, NULL, "set [KEY VALUE]",
     "show or change a setting (format, errexit, outlier_k, alpha, cube, ...)",
     "Without arguments, lists every setting and its value. One sub-command per setting:",
     cmd_set, set_subs},
    {"run", 1, 1, 0, COMPLETE_FILE, NULL, "run FILE",
     "run the commands of a script file",
     "Runs FILE line by line: '#' starts a comment, a trailing '\\' continues the line,\n"
     "';' separates commands. Errors are reported as FILE:LINE: message; with\n"
     "`set errexit on` (the default) the script stops at the first error.",
     cmd_run},
    {"save", 1, 1, 0, COMPLETE_FILE, NULL, "save FILE",
     "write the session's state-changing commands as a replayable script",
     "Writes every command that changed state (load, use, quant, rotate, scale, undo, ...)\n"
     "in the canonical form that reproduces it (explicit seeds), so `qsur -f FILE` or\n"
     "`run FILE` in a fresh session gives the same numbers. The file is written\n"
     "atomically (temporary name, then rename).",
     cmd_save},
    {"history", 0, 0, 0, COMPLETE_NONE, NULL, "history",
     "list the session log (what `save` would write)",
     "Lists the state-changing commands of this session, numbered, as `save` writes them.",
     cmd_history},
    {"echo", 0, -1, 0, COMPLETE_NONE, NULL, "echo TEXT...",
     "print text (useful in scripts and tutorials)",
     "Prints its arguments separated by spaces.",
     cmd_echo},
    {"quit", 0, 0, 0, COMPLETE_NONE, NULL, "quit",
     "leave qsur",
     "Leaves the REPL or stops a script. Ctrl-D does the same at the prompt.",
     cmd_quit},
    {"sleep", 1, 1, CMD_LONG, COMPLETE_NONE, NULL, "sleep SECONDS",
     "wait (ticks the progress line; Ctrl-C stops it)",
     "Waits SECONDS (fractions allowed), checking for Ctrl-C every 10 ms like\n"
     "every long computation does. Useful for pauses in tutorials and to try\n"
     "Ctrl-C: the prompt comes back and the session is untouched.",
     NULL, NULL, NULL, cmd_sleep, sleep_args},
    /* ---- teaching ---- */
    {"demo", 0, 3, CMD_LOGGED, COMPLETE_NONE, NULL, "demo [CORR] [OUTLIER_SCALE]",
     "2-D picture of QSUR: a Gaussian's ellipse inside the quantization square",
     "demo CORR [OUTLIER_SCALE] starts a 2-D Gaussian with correlation CORR whose\n"
     "x axis is an outlier axis OUTLIER_SCALE times wider (default 4); plain `demo`\n"
     "shows the current one (the first time: CORR 0.6, OUTLIER_SCALE 4).\n"
     "It draws the confidence ellipse (level `set alpha`, default 0.99) inside the\n"
     "smallest square the quantizer must cover, and prints QSUR = ellipse area /\n"
     "square area in closed form:\n"
     "  c^2 = -2 ln(1 - alpha), area = pi c^2 sqrt(det S),\n"
     "  side = 2 max_i (|mu_i| + c sqrt(S_ii))   (set cube asym: the [min,max] span).\n"
     "demo rotate DEG   rotates the points counter-clockwise (S -> R S R^T)\n"
     "demo scale A B    multiplies x by A and y by B (S -> D S D)\n"
     "demo reset        back to the last `demo CORR OUTLIER_SCALE`\n"
     "A rotation that aligns the ellipse with the axes and a scaling that makes it a\n"
     "circle reach the maximum QSUR, pi/4 = 0.785: what rotations and smoothing do\n"
     "to real activations in d dimensions.",
     NULL, demo_subs, NULL, cmd_demo, demo_args},
    /* ---- front ends ---- */
    {"tui", 0, 0, 0, COMPLETE_NONE, NULL, "tui",
     "open the full-screen workbench (ncurses) on this session",
     "Opens the TUI on the current session (the same as starting with `qsur --tui`):\n"
     "layer list, channel absmax bars with outliers marked, QSUR and quantization\n"
     "error before/after the transform stack, the stack, a command line and a\n"
     "teaching view. Keys run commands (h = rotate hadamard, s = scale smooth,\n"
     "u = undo, ...), so they are logged and `save FILE` replays them; F1 lists\n"
     "them (docs/tui.md). q or F10 comes back here.",
     cmd_tui},
};

const int command_count = (int)(sizeof command_table / sizeof command_table[0]);
