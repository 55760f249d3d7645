"""Slow reference of the official LeGrad code (WalBouss/LeGrad ``LeWrapper.compute_legrad_clip``), re-written for
HF's CLIP vision tower: one image, one prompt, eager attention returned by the model itself.

Per aggregated layer ``l`` (the last ``-layer_index`` ones): the layer's output tokens averaged over ALL tokens,
``post_layernorm``, ``visual_projection``, L2-normalised; ``sim`` = its dot product with the prompt's normalised
text embedding; ``d sim / d A^l`` (A^l: that layer's post-softmax attention), clamped at 0, averaged over heads,
then over query rows; the class token's column dropped; summed over layers; min-max over the patches.
"""

import torch


def legrad_official_reference(classifier, pixel_values, prompt: int, layer_index: int = -2) -> torch.Tensor:
    """``[num_patches]`` official LeGrad map of one image (``pixel_values`` ``[1, 3, H, W]``) for ``prompt``."""
    clip = classifier._clip
    vision = clip.vision_model
    previous = vision.config._attn_implementation_internal
    vision.config._attn_implementation_internal = "eager"
    try:
        out = vision(pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)
    finally:
        vision.config._attn_implementation_internal = previous
    num_layers = len(out.attentions)
    start = num_layers + layer_index if layer_index < 0 else layer_index
    text = classifier.text_embeddings()[prompt].detach()
    total = 0
    for layer in range(start, num_layers):
        tokens = out.hidden_states[layer + 1]  # hidden_states[0] is the input of the first layer
        feature = vision.post_layernorm(tokens.mean(dim=1)) @ clip.visual_projection.weight.T
        feature = feature / feature.norm(dim=-1, keepdim=True)
        sim = (feature @ text).sum()
        (gradient,) = torch.autograd.grad(sim, out.attentions[layer], retain_graph=True)
        relevance = gradient.clamp_min(0).mean(dim=1).mean(dim=1)[0, 1:]  # heads, then query rows; no [CLS]
        total = total + relevance
    return (total - total.min()) / (total.max() - total.min())
