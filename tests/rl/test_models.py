"""Local char tokenizer, tiny models saved and reloaded by path, LoRA policies."""

import pytest

torch = pytest.importorskip("torch")

from rl.policy.models import LoraSpec, build_tiny_model, load_policy, train_char_tokenizer  # noqa: E402
from rl.policy.rollouts import completion_logprobs, pack  # noqa: E402

CODE = ["def add(a, b):\n    return a + b\n", "def neg(x):\n\treturn -x  # done\n"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tok = train_char_tokenizer(CODE, root / "tok")
    path = build_tiny_model(root / "model", tok, hidden_size=64, num_layers=2, num_heads=4, seed=0)
    return path, tok


def test_char_tokenizer_round_trip_and_specials(tiny, tmp_path):
    from transformers import AutoTokenizer

    _, tok = tiny
    text = "def add(a, b):\n    return a + b\n"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text)  # one token per character, no special tokens added
    assert tok.decode(ids) == text  # decoders.Fuse(): no inserted spaces
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert tok.padding_side == "left"
    assert tok("Z")["input_ids"] == [tok.unk_token_id]  # unseen character
    n_chars = len(set("".join(CODE)))
    assert len(tok) == 4 + n_chars
    batch = tok(["ab", "abcd"], padding=True)
    assert batch["input_ids"][0][:2] == [0, 0] and batch["attention_mask"][0] == [0, 0, 1, 1]
    # saved and reloaded by path: same ids
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == ids and again.decode(ids) == text


def test_load_tokenizer_of_a_qwen2_model_dir_keeps_the_char_vocabulary(tiny):
    """transformers 5.23's AutoTokenizer forces Qwen2Tokenizer (byte-level) on qwen2 directories."""
    from transformers import AutoTokenizer

    from rl.policy.models import load_tokenizer

    path, tok = tiny
    text = "def add(a, b):\n    return a + b\n"
    again = load_tokenizer(path)
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.decode(again(text)["input_ids"]) == text
    assert again.padding_side == "left"
    auto = AutoTokenizer.from_pretrained(path)  # the pitfall load_tokenizer avoids
    assert auto(text)["input_ids"] != tok(text)["input_ids"]


def test_tiny_model_reloads_by_path_and_is_seeded(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    path, tok = tiny
    m = AutoModelForCausalLM.from_pretrained(path)
    assert m.config.model_type == "qwen2"
    assert (m.config.hidden_size, m.config.num_hidden_layers, m.config.vocab_size) == (64, 2, len(tok))
    assert m.config.pad_token_id == 0 and m.config.eos_token_id == 2
    same = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "a", tok, seed=0))
    other = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "b", tok, seed=1))
    sd, sd_same, sd_other = m.state_dict(), same.state_dict(), other.state_dict()
    assert all(torch.equal(sd[k], sd_same[k]) for k in sd)
    assert any(not torch.equal(sd[k], sd_other[k]) for k in sd)


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_left_padding_does_not_change_logprobs(tiny, tmp_path, arch):
    """The rotary/absolute-position pitfall: a left-padded row must score like the same row alone."""
    from transformers import AutoModelForCausalLM

    _, tok = tiny
    m = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / arch, tok, arch=arch, initializer_range=0.2))
    m.eval()
    short_p, short_c = tok("def f")["input_ids"], tok("(x):")["input_ids"]
    long_p, long_c = tok("def add(a, b):\n    ")["input_ids"], tok("return a")["input_ids"]
    alone = completion_logprobs(m, pack([short_p], [short_c], tok.pad_token_id))[0]
    batched = completion_logprobs(m, pack([long_p, short_p], [long_c, short_c], tok.pad_token_id))[1, : len(short_c)]
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    # and an independent reference: a plain forward on the unpadded sequence
    ids = torch.tensor([short_p + short_c])
    logits = m(input_ids=ids).logits[0, len(short_p) - 1 : -1].log_softmax(-1)
    ref = logits.gather(-1, ids[0, len(short_p) :, None])[:, 0]
    torch.testing.assert_close(alone, ref, atol=1e-5, rtol=1e-5)


def test_load_policy_lora_counts_and_identity_at_init(tiny):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path, tok = tiny
    model, tok2 = load_policy(path, LoraSpec(r=4, alpha=8))
    assert isinstance(model, PeftModel)
    assert tok2.padding_side == "left" and tok2.pad_token_id == 0
    p = next(model.parameters())
    assert p.device.type == "cpu" and p.dtype == torch.float32
    trainable = {n: q.numel() for n, q in model.named_parameters() if q.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # q,k,v,o: 64->64; gate, up: 64->256; down: 256->64; r (in + out) each; 2 layers
    per_layer = 4 * 4 * (64 + 64) + 2 * 4 * (64 + 256) + 4 * (256 + 64)
    assert sum(trainable.values()) == 2 * per_layer
    # LoRA B starts at 0: the policy equals the base model, and disabling the adapter changes nothing
    base = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = torch.tensor([tok("def add(a, b):")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, base(input_ids=ids).logits, atol=0, rtol=0)


def test_adapter_save_and_reload(tiny, tmp_path):
    path, tok = tiny
    model, _ = load_policy(path, LoraSpec())
    torch.manual_seed(3)
    with torch.no_grad():
        for n, q in model.named_parameters():
            if "lora_B" in n:
                q.normal_(0, 0.5)
    ids = torch.tensor([tok("return a + b")["input_ids"]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert (want - base).abs().max() > 1e-3  # the adapter matters
    model.save_pretrained(tmp_path / "adapter")
    again, _ = load_policy(path, None, adapter_path=tmp_path / "adapter")
    assert any(q.requires_grad for n, q in again.named_parameters() if "lora_" in n)
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, want, atol=1e-6, rtol=1e-6)
    # base path taken from the adapter config when not given
    third, _ = load_policy(None, None, adapter_path=tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(third(input_ids=ids).logits, want, atol=1e-6, rtol=1e-6)


def test_errors_name_the_problem(tiny, tmp_path):
    path, tok = tiny
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_policy(path, None, adapter_path=tmp_path)
    with pytest.raises(ValueError, match="arch"):
        build_tiny_model(tmp_path / "x", tok, arch="bert")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        build_tiny_model(tmp_path / "y", tok, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="r: expected >= 1"):
        LoraSpec(r=0)
