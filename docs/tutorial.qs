# qsur tutorial: QSUR, outliers, Hadamard, SmoothQuant and quantization error
# on the bundled sample layer. Run it with
#     ./build/qsur -f docs/tutorial.qs
# or step by step at the prompt (`run docs/tutorial.qs` runs it all at once).
# It runs in CI (tests/test_tutorial.sh), so every command here works.

# ---------------------------------------------------------------------------
# 1. The picture first: QSUR in two dimensions.
# A correlated 2-D Gaussian whose x axis is 4x wider than y. The quantizer
# must cover the whole square; the ellipse is where the data actually lives.
# QSUR = ellipse area / square area: here about 0.16 of the levels are used.
demo 0.6 4
# The best a rotation alone can do is to make the two spreads equal: the
# square shrinks and QSUR nearly doubles (0.157 -> 0.296).
demo rotate 36.13
# A rotation plus a scaling can do more. Start again, align the ellipse with
# the axes (alone this does not help: the square is set by the long axis)...
demo reset
demo rotate -8.87
# ...then shrink the long axis (sqrt of the eigenvalue ratio, 5.12x): a circle,
# the best possible QSUR, pi/4 = 0.785. Rotation and smoothing do this to real
# activations in d dimensions; OSTQuant learns both.
demo scale 0.1954 1

# ---------------------------------------------------------------------------
# 2. A real-looking layer: activations X (512 tokens x 256 channels) and the
# weight W (384 out x 256 in) they feed, with a few massive outlier channels.
load sample_data/layer.safetensors
use W X
info

# Four channels are 17-29x larger than the median channel: these are what a
# per-token quantizer must stretch its range for, wasting levels on the rest.
outliers
stats x top 5

# ---------------------------------------------------------------------------
# 3. Measure. 4-bit weights per output channel, 4-bit activations per token.
quant w4a4 w:sym,row a:sym,token
# In 256 dimensions QSUR underflows, so it is shown as log10 and per dimension.
qsur
error

# ---------------------------------------------------------------------------
# 4. Rotate. A Hadamard rotation spreads every outlier channel over all 256
# channels. X W^T does not change (see the equivalence error), but the
# distribution the quantizers see does: QSUR rises by ~200 decades and the
# output error falls from 0.49 to 0.19.
rotate hadamard 1
compare

# ---------------------------------------------------------------------------
# 5. Undo it and try SmoothQuant instead: move the activation outliers into
# the weights with s_j = max|X_j|^0.5 / max|W_j|^0.5. X gets easier and W
# harder; QSUR of X changes by exactly the log-determinant of the scaling.
undo
scale smooth 0.5
compare

# Both together: smooth first, then rotate.
rotate hadamard 1
stack
error

# ---------------------------------------------------------------------------
# 6. Weight quantizers that use the activations: GPTQ, QuantEase and AWQ all
# beat round-to-nearest on the layer's output error.
quant w4
gptq
quantease 3
awq

# ---------------------------------------------------------------------------
# 7. Everything that changed state can be saved and replayed:
#     save my_session.qs      then      ./build/qsur -f my_session.qs
history
