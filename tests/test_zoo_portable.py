"""A zoo folder is portable: a foreign entry carries a hash-checked snapshot of its code inside the zoo, so the
folder can be copied, archived and shared as a unit (the opt-in to run code is still required)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("spikingjelly")

from robench.errors import IntegrityError  # noqa: E402
from robench.zoo import load, read_card, verify  # noqa: E402
from robench.zoo.foreign import run_code  # noqa: E402
from robench.zoo.importing import import_foreign  # noqa: E402

NETS = Path(__file__).with_name("foreign_nets.py")
ZOO = Path(__file__).resolve().parents[1] / "zoo"


@pytest.fixture
def imported(tmp_path, monkeypatch):
    """Entry ``e1`` imported from a code folder outside the zoo: (zoo, code root)."""
    root = tmp_path / "project" / "code"
    root.mkdir(parents=True)
    shutil.copy(NETS, root / "tinynets.py")
    mod, _ = run_code(root / "tinynets.py", "tinynets", root)
    torch.manual_seed(0)
    w = tmp_path / "w.pt"
    torch.save(mod.sj().state_dict(), w)
    monkeypatch.setenv("ROBENCH_TRUST_CODE", "1")
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    zoo = tmp_path / "project" / "zoo"
    import_foreign(w, "spikingjelly", "tinynets:sj", x, y, "fashion-mnist", "e1", zoo, T=2, code_path=root,
                   trust_code=True)
    return zoo, root


def test_a_copied_zoo_loads_its_foreign_entry_without_the_original_code(imported, tmp_path):
    zoo, root = imported
    model, card = load("e1", zoo, trust_code=True)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        want = model(x)
    elsewhere = tmp_path / "elsewhere" / "deeper" / "my-zoo"
    shutil.copytree(zoo, elsewhere)
    shutil.rmtree(root)  # the original code is gone, the zoo still holds everything
    moved, _ = load("e1", elsewhere, trust_code=True)
    with torch.no_grad():
        assert torch.equal(moved(x), want)
    assert all(ok for _, ok, _ in verify(elsewhere))
    assert all(ok for _, ok, _ in verify(elsewhere, trust_code=True))


def test_the_snapshot_is_hash_checked_and_still_needs_the_opt_in(imported, monkeypatch):
    zoo, _ = imported
    card = read_card(zoo, "e1")
    snap = zoo / card.model["snapshot"] / card.model["code_file"]
    assert snap.is_file() and snap.resolve().is_relative_to(zoo.resolve())
    with pytest.raises(IntegrityError, match="--trust-code"):
        load("e1", zoo)
    monkeypatch.delenv("ROBENCH_TRUST_CODE")
    with pytest.raises(IntegrityError, match="ROBENCH_TRUST_CODE"):
        load("e1", zoo, trust_code=True)
    monkeypatch.setenv("ROBENCH_TRUST_CODE", "1")
    with open(snap, "a") as f:
        f.write("\n# edited\n")
    with pytest.raises(IntegrityError, match="changed since the entry was imported"):
        load("e1", zoo, trust_code=True)
    [(_, ok, msg)] = verify(zoo)
    assert not ok and "changed since" in msg


def test_the_shipped_spikingjelly_entry_loads_from_a_copied_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_TRUST_CODE", "1")
    elsewhere = tmp_path / "copy" / "zoo"
    shutil.copytree(ZOO, elsewhere)
    monkeypatch.chdir(tmp_path)  # neither the project's folder nor its examples/ are anywhere near
    model, card = load("fmnist-sjvgg-lif-clean", elsewhere, trust_code=True)
    assert (elsewhere / card.model["snapshot"] / card.model["code_file"]).is_file()
    from robench.data import load as load_data

    x, y = load_data("fashion-mnist", "subset", limit=64)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    assert acc > 0.6  # the card says 85 % on the 10,000 test images
