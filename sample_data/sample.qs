# The bundled sample layer: activations X (512 tokens x 256 channels, with four
# massive outlier channels) and the weight W (384 out x 256 in) they feed.
# Opened by the README's first command; try `help` at the prompt.
load sample_data/layer.safetensors
use W X
quant w4a4 w:sym,row a:sym,token
outliers
qsur
error
