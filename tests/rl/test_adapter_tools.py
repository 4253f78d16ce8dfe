"""``rl evaluate --adapter/--k`` on the synthetic benchmark, ``rl merge``, and no transformers
FutureWarning from loading a LoRA policy (issue 20)."""

from __future__ import annotations

import json
import warnings

import pytest

torch = pytest.importorskip("torch")

from rl.cli import main  # noqa: E402
from rl.policy.models import LoraSpec, build_tiny_model, load_policy, train_char_tokenizer  # noqa: E402
from rl.tasks.synthetic import make_benchmark  # noqa: E402
from rl.train.sft import all_texts  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter")
    tok = train_char_tokenizer(all_texts(make_benchmark(n_train_per_template=2, n_heldout_per_template=1)), root / "tok")
    base = build_tiny_model(root / "base", tok, hidden_size=32, num_layers=1, num_heads=2, initializer_range=0.2)
    model, _ = load_policy(base, LoraSpec(r=4, alpha=8))
    with torch.no_grad():  # a LoRA update that changes the outputs (B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(root / "adapter")
    return base, root / "adapter", root


def test_load_policy_prints_no_gradient_checkpointing_future_warning(base_and_adapter):
    base, adapter, _ = base_and_adapter
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_policy(base, LoraSpec(r=4, alpha=8))
        load_policy(base, None, adapter_path=adapter)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_rl_merge_logits_equal_the_adapter_models(base_and_adapter, capsys):
    from transformers import AutoModelForCausalLM

    from rl.policy.models import load_tokenizer

    base, adapter, root = base_and_adapter
    out = root / "merged"
    assert main(["merge", "--model", str(base), "--adapter", str(adapter), "--out", str(out)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    peft_model, tok = load_policy(base, None, adapter_path=adapter)
    ids = load_tokenizer(out)("# add 3 to x\ndef f(x):\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base).eval()(input_ids=ids).logits
    assert not torch.allclose(want, plain, atol=1e-3)  # the adapter matters
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # --model defaults to the adapter's base
    assert main(["merge", "--adapter", str(adapter), "--out", str(root / "merged2")]) == 0


def test_rl_merge_refuses_a_non_adapter(base_and_adapter, capsys):
    base, _, root = base_and_adapter
    assert main(["merge", "--model", str(base), "--adapter", str(base), "--out", str(root / "m3")]) == 2
    assert "adapter_config.json" in capsys.readouterr().err


def test_rl_evaluate_synthetic_with_adapter_and_k(base_and_adapter, capsys):
    base, adapter, root = base_and_adapter
    out = root / "eval"
    args = ["evaluate", "--model", str(base), "--adapter", str(adapter), "--benchmark", "synthetic", "--n", "3", "--limit", "2"]
    args += ["--k", "1", "3", "--max-new-tokens", "12", "--workers", "1", "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["pass_at_k"]) == {"pass@1", "pass@3"}
    assert summary["adapter"] == str(adapter) and summary["split"] == "heldout" and summary["n_problems"] == 2
    assert "pass@3=" in capsys.readouterr().out
    assert main([*args[:-1], str(root / "eval2"), "--k", "4"]) == 2
    assert "--k 4" in capsys.readouterr().err
