"""Tiny random Llama checkpoints that transformers writes, with a word-level tokenizer
(``w{i}`` is token i) and a ChatML template: what the CLI and translator tests run."""
import json
import struct

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "<|im_end|>", "<|im_start|>"]
EOS = 2  # <|im_end|>: the end of a turn and of a sequence


def save_llama(directory, vocab_size, hidden, layers, context, seed, template=CHATML, eos=EOS):
    """A random Llama checkpoint in ``directory`` with a word-level tokenizer; returns it."""
    import tokenizers
    import torch
    import transformers
    from tokenizers import models, pre_tokenizers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=context, initializer_range=0.3, bos_token_id=1, eos_token_id=eos)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    words = SPECIAL + [f"w{i}" for i in range(len(SPECIAL), vocab_size)]
    tokenizer = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)},
                                                      "<unk>"))
    tokenizer.add_special_tokens(SPECIAL)
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    settings = {"eos_token": "<|im_end|>", "bos_token": "<s>"}
    if template is not None:
        settings["chat_template"] = template
    (directory / "tokenizer_config.json").write_text(json.dumps(settings))
    return directory


def save_lora(base, directory, seed, rank=4, targets=("q_proj", "v_proj", "down_proj"),
              modules_to_save=None):
    """A PEFT LoRA adapter for the checkpoint ``base``, saved in ``directory`` as
    ``save_pretrained`` writes it. B is drawn at random instead of PEFT's zeros, so the adapter
    changes what the model says."""
    import peft
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_pretrained(base)
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets),
                             modules_to_save=modules_to_save)
    lora = peft.get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.3)
    lora.save_pretrained(directory)
    return directory


def save_sparse_adapter(directory, name, shape):
    """An adapter file whose one tensor has `shape` in float32, written as a sparse file: its
    header is real, its data takes no disk space."""
    directory.mkdir()
    nbytes = 4 * shape[0] * shape[1]
    header = json.dumps({name: {"dtype": "F32", "shape": list(shape),
                                "data_offsets": [0, nbytes]}}).encode()
    with open(directory / "adapter_model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + nbytes)
    (directory / "adapter_config.json").write_text("{}")
    return directory
