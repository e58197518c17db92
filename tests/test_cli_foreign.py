"""``robench zoo import --framework``: the whole path through the CLI, and each bad input of issue 13 refused in
one line with nothing written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import one_line, run_main

pytest.importorskip("spikingjelly")
pytest.importorskip("snntorch")

from robench.zoo.foreign import run_code  # noqa: E402

NETS = Path(__file__).with_name("foreign_nets.py")


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A code folder with module ``tinynets``, weights for its ``sj`` net, and the opt-in set: (tmp, root, w)."""
    root = tmp_path / "code"
    root.mkdir()
    shutil.copy(NETS, root / "tinynets.py")
    mod, _ = run_code(root / "tinynets.py", "tinynets", root)
    torch.manual_seed(0)
    w = tmp_path / "w.pt"
    torch.save(mod.sj().state_dict(), w)
    torch.save(mod.plain().state_dict(), tmp_path / "plain.pt")
    monkeypatch.setenv("ROBENCH_TRUST_CODE", "1")
    return tmp_path, root, w


def args(tmp, root, w, entry="tinynets:sj", *extra):
    return ["zoo", "import", str(w), "--id", "e1", "--framework", "spikingjelly", "--entry", entry, "--code-path",
            str(root), "-T", "2", "--n", "16", "--zoo", str(tmp / "zoo"), "--trust-code", *extra]


def test_import_attack_and_a_changed_code_file(place, capsys):
    tmp, root, w = place
    code, out, _ = run_main(capsys, args(tmp, root, w))
    assert code in (0, None) and "imported" in out and "bitwise" in out
    attack = ["attack", "-m", "e1", "--zoo", str(tmp / "zoo"), "--n", "4", "--attack", "fgsm", "--split", "subset",
              "--out", str(tmp / "res"), "--trust-code"]
    code, out, _ = run_main(capsys, attack)
    assert code in (0, None) and "e1" in out
    with open(root / "tinynets.py", "a") as f:  # the original: the entry runs its own copy in the zoo
        f.write("\n# edited\n")
    code, out, _ = run_main(capsys, [*attack, "--name", "original-edited"])
    assert code in (0, None) and "e1" in out
    (snapshot,) = (tmp / "zoo" / "code").glob("*/tinynets.py")
    with open(snapshot, "a") as f:
        f.write("\n# edited\n")
    code, _, err = run_main(capsys, [*attack, "--name", "again"])
    assert code == 1 and "tinynets.py" in one_line(err) and "changed since the entry was imported" in err
    assert not (tmp / "res" / "again.csv").exists()
    code, out, _ = run_main(capsys, ["zoo", "verify", "--zoo", str(tmp / "zoo")])
    assert code == 1 and "changed since" in out


@pytest.mark.parametrize("change, exit_code, message", [
    (lambda a: [x for x in a if x != "--trust-code"], 1, "tinynets.py.*missing: --trust-code"),
    ("no-env", 1, "missing: ROBENCH_TRUST_CODE=1"),
    (lambda a: [*a, "--kwargs", "{kind: lif}"], 2, "is not JSON"),
    (lambda a: [*a, "--kwargs", "[1, 2]"], 2, "is a JSON list"),
    (lambda a: [*a, "--kwargs", '{"nope": 1}'], 2, "raised TypeError"),
    (lambda a: [x.replace("tinynets:sj", "tinynets:missing") for x in a], 2, "defines no function 'missing'"),
    (lambda a: [x.replace("tinynets:sj", "othernets:sj") for x in a], 2, "no othernets.py under"),
    (lambda a: [x.replace("w.pt", "plain.pt") for x in a], 1, "weights do not fit"),
    (lambda a: [x.replace("tinynets:sj", "tinynets:stateful") for x in a], 1, "stateful model"),
    (lambda a: [x.replace("tinynets:sj", "tinynets:probabilities") for x in a], 2, "probabilities"),
    (lambda a: [x.replace("multi", "sideways") for x in a], 2, "step-mode 'sideways'"),
])
def test_bad_inputs_give_one_line_and_write_nothing(place, capsys, monkeypatch, change, exit_code, message):
    tmp, root, w = place
    a = args(tmp, root, w, "tinynets:sj", "--step-mode", "multi")
    if change == "no-env":
        monkeypatch.delenv("ROBENCH_TRUST_CODE")
    else:
        a = change(a)
    if "stateful" in " ".join(a) or "probabilities" in " ".join(a):  # plain PyTorch models, one step at a time
        a = [x.replace("w.pt", "plain.pt").replace("spikingjelly", "torch").replace("multi", "single") for x in a]
    if "stateful" in " ".join(a):
        torch.save({"fc.weight": torch.zeros(10, 784), "fc.bias": torch.zeros(10)}, tmp / "plain.pt")
    elif "probabilities" in " ".join(a):
        torch.save({"1.weight": torch.zeros(10, 784), "1.bias": torch.zeros(10)}, tmp / "plain.pt")
    code, _, err = run_main(capsys, a)
    assert code == exit_code and re.search(message, one_line(err)), err
    assert not (tmp / "zoo").exists() or not any((tmp / "zoo").iterdir())


# ------------------------------------------------------------------------- outputs and step modes (defect 11)
@pytest.fixture
def tuple_net(place):
    """Weights of the snnTorch net whose read-out layer returns ``(spk, mem)`` (single-step), and of the SpikingJelly
    net that returns a dict."""
    tmp, root, _ = place
    mod, _ = run_code(root / "tinynets.py", "tinynets", root)
    torch.manual_seed(0)
    torch.save(mod.snn_subtract(output=True).state_dict(), tmp / "tuple.pt")
    torch.save(mod.dict_out().state_dict(), tmp / "dict.pt")
    return tmp, root, mod


def snn_args(tmp, root, *extra):
    return ["zoo", "import", str(tmp / "tuple.pt"), "--id", "e1", "--framework", "snntorch", "--entry",
            "tinynets:snn_subtract", "--kwargs", '{"output": true}', "--code-path", str(root), "-T", "2", "--n", "16",
            "--zoo", str(tmp / "zoo"), "--trust-code", *extra]


@pytest.mark.parametrize("extra, message", [
    (["--step-mode", "single"], r"returns a tuple of 2 \(0: \[2, 10\]; 1: \[2, 10\]\).*pick the logits with "
                                r"--output INDEX \(0\.\.1\)"),
    (["--step-mode", "single", "--output", "2"], r"--output '2': the model returns a tuple with indices 0, 1"),
    (["--step-mode", "single", "--output", "mem"], r"--output 'mem'.*give an index such as --output 1"),
    (["--output", "1"], r"fails as a multi-step network \(RuntimeError: .*\) but runs as a single-step one.*: pass "
                        r"--step-mode single$"),
    ([], r"pass --step-mode single; with it: the model returns a tuple of 2"),
])
def test_ambiguous_outputs_and_the_wrong_step_mode_are_refused(tuple_net, capsys, extra, message):
    tmp, root, _ = tuple_net
    code, _, err = run_main(capsys, snn_args(tmp, root, *extra))
    assert code == 2 and re.search(message, one_line(err)), err
    assert not (tmp / "zoo").exists() or not any((tmp / "zoo").iterdir())


def test_the_picked_output_is_recorded_and_applied_on_load(tuple_net, capsys):
    from robench.zoo import load
    from robench.zoo.adapters import ForeignModel

    tmp, root, mod = tuple_net
    code, out, _ = run_main(capsys, snn_args(tmp, root, "--step-mode", "single", "--output", "1"))
    assert code in (0, None) and "imported" in out and "output '1'" in out
    model, card = load("e1", tmp / "zoo", trust_code=True)
    assert card.model["output"] == "1"
    net = mod.snn_subtract(output=True)
    net.load_state_dict(torch.load(tmp / "tuple.pt", weights_only=True))
    x = torch.rand(3, 1, 28, 28)
    mem = ForeignModel(net.eval(), "snntorch", 2, "single", map_neurons=False, output="1")
    with torch.no_grad():
        assert torch.equal(model(x), mem(x))  # the membrane, averaged over T
    code, _, err = run_main(capsys, ["zoo", "import", str(tmp / "dict.pt"), "--id", "e2", "--framework",
                                     "spikingjelly", "--entry", "tinynets:dict_out", "--code-path", str(root), "-T",
                                     "2", "--n", "16", "--zoo", str(tmp / "zoo"), "--trust-code"])
    assert code == 2 and "pick the logits with --output KEY (spikes, logits)" in one_line(err)
    code, out, _ = run_main(capsys, ["zoo", "import", str(tmp / "dict.pt"), "--id", "e2", "--framework",
                                     "spikingjelly", "--entry", "tinynets:dict_out", "--code-path", str(root), "-T",
                                     "2", "--n", "16", "--zoo", str(tmp / "zoo"), "--trust-code", "--output", "logits"])
    assert code in (0, None) and load("e2", tmp / "zoo", trust_code=True)[1].model["output"] == "logits"


def test_a_multi_step_model_imported_as_single_step_names_multi(place, capsys):
    tmp, root, w = place
    code, _, err = run_main(capsys, args(tmp, root, w, "tinynets:sj", "--step-mode", "single"))
    assert code == 2 and re.search(r"fails as a single-step network .* pass --step-mode multi$", one_line(err)), err


def test_output_needs_framework(place, capsys):
    tmp, _, w = place
    code, _, err = run_main(capsys, ["zoo", "import", str(w), "--id", "e1", "--zoo", str(tmp / "zoo"), "--output",
                                     "1"])
    assert code == 2 and "--output" in one_line(err) and "--framework" in err


def test_a_card_written_before_output_existed_still_reads(place, capsys):
    """The shipped SpikingJelly card has no ``output`` key: it reads as "one tensor"."""
    import json

    from robench.zoo import Card

    d = json.loads((Path(__file__).parents[1] / "zoo" / "fmnist-sjvgg-lif-clean.json").read_text())
    assert "output" not in d["model"]
    assert Card.validate(d).model.get("output", "") == ""


def test_a_model_whose_forward_samples_must_declare_it_and_is_then_evaluated_with_draws(place, capsys):
    tmp, root, _ = place
    torch.manual_seed(0)
    w = tmp / "sampling.pt"
    torch.save({"fc.weight": 0.05 * torch.randn(10, 784), "fc.bias": torch.zeros(10)}, w)
    imp = ["zoo", "import", str(w), "--id", "rand", "--framework", "torch", "--entry", "tinynets:sampling",
           "--code-path", str(root), "-T", "1", "--step-mode", "single", "--n", "16", "--zoo", str(tmp / "zoo"),
           "--trust-code"]
    code, _, err = run_main(capsys, imp)  # undeclared randomness is refused
    assert code == 1 and "import it with --encoding poisson" in one_line(err)
    assert run_main(capsys, [*imp, "--encoding", "poisson"])[0] in (0, None)
    attack = ["attack", "-m", "rand", "--zoo", str(tmp / "zoo"), "--n", "8", "--attack", "pgd-best", "--steps", "2",
              "--grad", "bptt", "--split", "subset", "--out", str(tmp / "res"), "--trust-code"]
    code, _, err = run_main(capsys, [*attack, "--encoding", "direct"])
    assert code == 2 and "imported with encoding 'poisson'" in one_line(err)
    assert not (tmp / "res").exists()
    code, out, _ = run_main(capsys, [*attack, "--eot", "2", "--draws", "4"])
    assert code in (0, None) and "2 new rows" in out  # the averaged-prediction row and the single-draw row
