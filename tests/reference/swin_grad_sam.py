"""Slow reference of Grad-SAM on Swin, from coordinates: every window position located by hand.

Runs the model with eager attention, keeping what each block's attention module returns (the maps that multiply the
values; transformers' ``output_attentions`` returns one map per stage only), takes ``d logit / d A`` per layer, then
for every window position works out which token it holds from the layer's padding, cyclic shift (``torch.roll`` by
``-shift``) and window size, and spreads each stage token's score over the input tokens it covers (``2^level x
2^level``, clipped at the grid's edge).
"""

import torch


def _blocks(model):
    return [block for stage in model.swin.encoder.layers for block in stage.blocks]


def swin_grad_sam_reference(model, pixel_values, target: int) -> torch.Tensor:
    """``[input tokens]`` Grad-SAM (query axis) of one image."""
    attentions = []
    handles = [block.attention.register_forward_hook(lambda _m, _a, output: attentions.append(output[1]))
               for block in _blocks(model)]
    previous = model.config._attn_implementation_internal
    model.config._attn_implementation_internal = "eager"
    try:
        logits = model(pixel_values=pixel_values).logits
    finally:
        model.config._attn_implementation_internal = previous
        for handle in handles:
            handle.remove()
    gradients = torch.autograd.grad(logits[0, target], attentions)
    rows = pixel_values.shape[-2] // model.config.patch_size
    cols = pixel_values.shape[-1] // model.config.patch_size
    total = torch.zeros(rows * cols, dtype=torch.float64)
    height, width = rows, cols
    blocks = _blocks(model)
    stage_of_block = [s for s, stage in enumerate(model.swin.encoder.layers) for _ in stage.blocks]
    for block, stage, attention, gradient in zip(blocks, stage_of_block, attentions, gradients, strict=True):
        height, width = -(-rows // 2**stage), -(-cols // 2**stage)
        window, shift = int(block.window_size), int(block.shift_size)
        padded_h, padded_w = -(-height // window) * window, -(-width // window) * window
        weighted = (attention.detach().double() * gradient.double().clamp_min(0)).sum(dim=1)  # [windows, a, b]
        heads = attention.shape[1]
        windows_per_row = padded_w // window
        stage_scores = torch.zeros(height * width, dtype=torch.float64)
        for k in range(weighted.shape[0]):
            positions = []
            for a in range(window):
                for b in range(window):
                    y = (k // windows_per_row) * window + a
                    x = (k % windows_per_row) * window + b
                    y, x = (y + shift) % padded_h, (x + shift) % padded_w  # undo the roll by -shift
                    positions.append(y * width + x if y < height and x < width else None)
            real = [i for i, p in enumerate(positions) if p is not None]
            for i in real:
                row_sum = sum(float(weighted[k, i, j]) for j in real)
                stage_scores[positions[i]] = row_sum / (heads * len(real))
        for r in range(rows):
            for c in range(cols):
                total[r * cols + c] += stage_scores[(r >> stage) * width + (c >> stage)]
    return (total / len(blocks)).float()
