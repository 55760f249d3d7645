"""LeGrad written from the paper for HF classifiers: one ``torch.autograd.grad`` per layer, explicit head code.

The per-family read-out is written out here independently of ``lightning_xai.families``.
"""

import torch

from reference.attention import content_mask, eager_outputs


def readout(model, hidden):
    name = type(model).__name__
    if name == "BertForSequenceClassification":
        return model.classifier(torch.tanh(model.bert.pooler.dense(hidden[:, 0])))
    if name == "RobertaForSequenceClassification":
        return model.classifier.out_proj(torch.tanh(model.classifier.dense(hidden[:, 0])))
    if name == "DistilBertForSequenceClassification":
        return model.classifier(torch.relu(model.pre_classifier(hidden[:, 0])))
    if name == "ViTForImageClassification":
        return model.classifier(model.vit.layernorm(hidden)[:, 0])
    if name == "DeiTForImageClassification":
        return model.classifier(model.deit.layernorm(hidden)[:, 0])
    if name == "DeiTForImageClassificationWithTeacher":
        normed = model.deit.layernorm(hidden)
        return (model.cls_classifier(normed[:, 0]) + model.distillation_classifier(normed[:, 1])) / 2
    raise ValueError(name)


def legrad_reference(model, inputs_row: dict, target: int | None = None, start_layer: int = 0) -> torch.Tensor:
    model, out = eager_outputs(model, inputs_row, output_hidden_states=True)
    c = int(out.logits[0].argmax()) if target is None else target
    L = len(out.attentions)
    N = out.attentions[0].shape[-1]
    content = content_mask(inputs_row, N)
    total = torch.zeros(N, dtype=torch.float64)
    for layer in range(start_layer % L if start_layer < 0 else start_layer, L):
        score = readout(model, out.hidden_states[layer + 1])[0, c]  # hidden_states[0] is the embedding output
        (grad,) = torch.autograd.grad(score, out.attentions[layer], retain_graph=True)
        G = grad[0].double().clamp(min=0)
        H = G.shape[0]
        for j in range(N):
            total[j] += sum(G[h, i, j] for h in range(H) for i in range(N)) / (H * N)
    total[~content] = 0
    lo, hi = total[content].min(), total[content].max()
    result = torch.zeros(N, dtype=torch.float64)
    result[content] = (total[content] - lo) / max(float(hi - lo), 1e-12)
    return result.float()
