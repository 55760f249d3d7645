"""recipes/lora_sft.yaml: the SAME recipe run offline with a tiny local stand-in (a random Llama saved from a config,
a word-level tokenizer with a chat template) and a few local instruction rows."""

import json
from pathlib import Path

import pytest
import torch

from lightning_xai import cli
from lightning_xai.families.peft_models import is_peft_wrapper
from lightning_xai.recipes import InstructionDataModule, LoRASFTModule

pytest.importorskip("peft")
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "lora_sft.yaml"
pytestmark = pytest.mark.filterwarnings("ignore:The number of training batches", "ignore:.*log_every_n_steps.*")
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "<s>{% for message in messages %}<|user|> {{ message['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
ROWS = [
    {"instruction": "name the colour of the sky", "input": "", "output": "blue"},
    {"instruction": "name the colour of grass", "input": "", "output": "green"},
    {"instruction": "add the numbers", "input": "two and three", "output": "five"},
    {"instruction": "name the colour of snow", "input": "", "output": "white"},
    {"instruction": "add the numbers", "input": "one and one", "output": "two"},
    {"instruction": "name the colour of coal", "input": "", "output": "black"},
    {"instruction": "add the numbers", "input": "two and two", "output": "four"},
    {"instruction": "name the colour of blood", "input": "", "output": "red"},
]


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny Llama + tokenizer folder, a train.jsonl of instruction rows)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_llama_instruct")
    words = sorted({w for row in ROWS for value in row.values() for w in value.split()})
    vocab = {token: i for i, token in enumerate(SPECIALS + words)}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
                         bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return folder, data


def test_instruction_batches_are_sft_batches(stand_in):
    folder, data = stand_in
    module = InstructionDataModule(str(folder), train_path=str(data), val_size=3, batch_size=3, max_length=32)
    module.setup()
    assert len(module._splits["train"]) == 5 and len(module._splits["val"]) == 3
    batch = next(iter(module.val_dataloader()))
    tokenizer = module.tokenizer
    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True):
        real = mask.bool()
        completion = labels != -100
        text = tokenizer.convert_ids_to_tokens(ids[real].tolist())
        assert text[0] == "<s>" and text[1] == "<|user|>"  # the chat template's prompt
        answer = tokenizer.convert_ids_to_tokens(ids[completion].tolist())
        assert answer[-1] == "</s>" and len(answer) == 2  # the one-word response and EOS
        assert text[-3] == "<|assistant|>" and text[-2:] == answer  # the completion follows the generation prompt
        assert not (completion & ~real).any() and bool((ids[~real] == tokenizer.pad_token_id).all())


def test_the_module_wraps_the_model_with_lora_adapters(stand_in):
    folder, _ = stand_in
    state = torch.random.get_rng_state()
    module = LoRASFTModule(str(folder), lora_r=2, dtype="float32")
    assert torch.equal(state, torch.random.get_rng_state())  # the adapters come from a private stream
    assert is_peft_wrapper(module.model) and module.model.training
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)


def test_fast_dev_run_of_the_recipe(stand_in, tmp_path, monkeypatch, capsys):
    folder, data = stand_in
    monkeypatch.chdir(tmp_path)
    cli.main(
        [
            "fit",
            "--config",
            str(RECIPE),
            "--trainer.fast_dev_run=1",
            f"--model.init_args.model_name_or_path={folder}",
            f"--data.init_args.model_name_or_path={folder}",
            f"--data.init_args.train_path={data}",
            "--data.init_args.val_size=4",
            "--data.init_args.batch_size=4",
            "--data.init_args.max_length=32",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        ]
    )
    out = capsys.readouterr().out
    assert "fit finished" in out
    assert "Explanation metrics" in out  # the monitor explained the validation batch
    for method in ("grad_sam", "attn_lrp", "legrad", "gradient_x_input", "random"):
        assert method in out, method
