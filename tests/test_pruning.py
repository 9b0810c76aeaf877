"""Network Slimming library: selection rules, exact equivalence of the physical removal, accounting."""
from __future__ import annotations

import copy
import math

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from pruning import prune_model
from pruning.accounting import count_flops, count_params, pruning_stats
from pruning.groups import channel_groups, count_prunable_channels, group_scores
from pruning.slimming import bn_l1_subgradient, select_channels

GRID = [1 - 0.96 ** k for k in range(1, 18)]


def resnet(arch: str, in_channels: int = 3, seed: int = 0) -> nn.Module:
    """A torchvision ResNet with random (non-trivial) BatchNorm parameters and statistics, in eval mode."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(num_classes=7)
    if in_channels != 3:  # the temporal stream's stem reads 10 stacked flow fields (20 channels)
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.1, 1.0)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def zero_removed_channels(model: nn.Module, ratio: float, residual: bool) -> nn.Module:
    """Zero γ and β of every channel the selection removes, in all the BatchNorms of its group."""
    zeroed = copy.deepcopy(model)
    for group, keep in select_channels(zeroed, ratio, residual=residual):
        removed = torch.ones(group.width, dtype=torch.bool)
        removed[keep] = False
        for name in group.bns:
            bn = zeroed.get_submodule(name)
            with torch.no_grad():
                bn.weight[removed] = 0
                bn.bias[removed] = 0
    return zeroed


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("in_channels", [3, 20], ids=["spatial", "temporal"])
@pytest.mark.parametrize("residual", [False, True], ids=["internal", "residual"])
def test_removal_is_exactly_equivalent_to_zeroed_channels(arch, in_channels, residual):
    # Zeroing γ and β silences a channel exactly: its BN output is 0, ReLU keeps it 0, and in a
    # residual group every BN writing the shared tensor is zeroed, so the sums stay 0 up to fc.
    # Removing those channels must then leave the outputs unchanged.
    model = resnet(arch, in_channels)
    ratio = 0.4353
    zeroed = zero_removed_channels(model, ratio, residual)
    pruned = prune_model(zeroed, ratio, residual=residual)
    x = torch.randn(3, in_channels, 48, 48)
    with torch.no_grad():
        expected, got, original = zeroed(x), pruned(x), model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(original, expected, atol=1e-3), "zeroing had no effect: the test would prove nothing"
    assert count_params(pruned) < count_params(model)
    assert [n for n, _ in pruned.named_modules()] == [n for n, _ in model.named_modules()]
    removed = 1 - count_prunable_channels(pruned, residual=residual) / count_prunable_channels(model, residual=residual)
    assert removed == pytest.approx(ratio, abs=1e-3)


def test_prune_model_leaves_its_input_alone():
    model = resnet("resnet18")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prune_model(model, 0.3, residual=True)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("ratio", GRID + [0.9])
def test_global_threshold_removes_exactly_the_requested_fraction(ratio, residual):
    model = resnet("resnet18", seed=1)
    total = count_prunable_channels(model, residual=residual)
    plan = select_channels(model, ratio, residual=residual, min_channels=8)
    removed = sum(group.width - len(keep) for group, keep in plan)
    assert removed == round(ratio * total)
    assert all(len(keep) >= 8 for _, keep in plan), "a layer fell below min_channels"
    # one global threshold: outside layers held at their minimum, every removed channel
    # scores no higher than any kept one
    removed_scores, kept_scores = [], []
    for group, keep in plan:
        scores = group_scores(model, group)
        mask = torch.zeros(group.width, dtype=torch.bool)
        mask[keep] = True
        removed_scores.append(scores[~mask])
        if len(keep) > 8:
            kept_scores.append(scores[mask])
    assert torch.cat(removed_scores).max() <= torch.cat(kept_scores).min()


@pytest.mark.parametrize("min_channels", [8, 0.05])
def test_no_layer_is_emptied_at_90_percent(min_channels):
    model = resnet("resnet50", seed=2)
    pruned = prune_model(model, 0.9, residual=True, min_channels=min_channels)
    widths = {group.name: group.width for group in channel_groups(model, residual=True)}
    for group in channel_groups(pruned, residual=True):
        floor = 8 if min_channels == 8 else math.ceil(0.05 * widths[group.name])
        assert group.width >= floor, group.name
    assert pruned(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_round_to_keeps_widths_multiples_and_the_fraction_close():
    model = resnet("resnet50", seed=3)
    total = count_prunable_channels(model, residual=True)
    for ratio in (GRID[0], GRID[13], GRID[16]):
        plan = select_channels(model, ratio, residual=True, round_to=8)
        assert all(len(keep) % 8 == 0 for _, keep in plan)
        removed = sum(group.width - len(keep) for group, keep in plan)
        assert abs(removed - ratio * total) <= 4.5


def test_known_answer_lowest_gammas_go_first():
    model = resnet("resnet18")
    with torch.no_grad():
        model.layer3[1].bn1.weight[[5, 17, 200]] = 1e-4
        model.layer1[0].bn1.weight[3] = 1e-5
    plan = dict((group.name, keep) for group, keep in select_channels(model, 4 / 1920, min_channels=1))
    assert set(range(256)) - set(plan["layer3.1.bn1"].tolist()) == {5, 17, 200}
    assert set(range(64)) - set(plan["layer1.0.bn1"].tolist()) == {3}


def test_too_much_pruning_is_a_clear_error():
    with pytest.raises(ValueError, match="at most"):
        select_channels(resnet("resnet18"), 0.99, min_channels=8)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_model(resnet("resnet18"), 1.0)


@pytest.mark.parametrize("residual", [False, True])
def test_bn_l1_subgradient_adds_s_sign_gamma_to_prunable_bns_only(residual):
    model = resnet("resnet18")
    with torch.no_grad():
        model.layer2[0].bn1.weight[0] = -0.5
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    bn_l1_subgradient(model, 1e-3, residual=residual)
    penalised = {bn for group in channel_groups(model, residual=residual) for bn in group.bns}
    for name, param in model.named_parameters():
        module = name.rpartition(".")[0]
        expected = grads[name]
        if name.endswith("weight") and module in penalised:
            expected = expected + 1e-3 * torch.sign(param.detach())
        torch.testing.assert_close(param.grad, expected, rtol=0, atol=0)
    assert ("bn1" in penalised) == residual
    assert model.layer2[0].bn1.weight.grad[0] == grads["layer2.0.bn1.weight"][0] - 1e-3


def hooked_flops(model: nn.Module, input_size: int) -> int:
    """Independent count: 2 · (output elements) · (inputs per output) for every conv and linear."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += 2 * output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        else:
            total += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, model.conv1.in_channels, input_size, input_size))
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_accounting_matches_an_independent_count(arch):
    model = resnet(arch, in_channels=20)
    pruned = prune_model(model, 0.3, residual=True)
    assert count_flops(pruned, 32) == hooked_flops(pruned, 32)
    assert count_params(pruned) == sum(p.numel() for p in pruned.parameters())
    stats = pruning_stats(model, pruned, residual=True, input_size=32)
    assert stats["channels_removed"] == pytest.approx(0.3, abs=1e-3)
    assert stats["flops_removed"] == pytest.approx(1 - hooked_flops(pruned, 32) / hooked_flops(model, 32))
    assert 0 < stats["params_removed"] < 1
    assert pruning_stats(model, copy.deepcopy(model), input_size=32) == {
        "channels_removed": 0.0, "params_removed": 0.0, "flops_removed": 0.0}


RELOAD_SCRIPT = """
import sys, torch
from training.checkpoint import load_checkpoint
for stream in ("spatial", "temporal"):
    model = load_checkpoint(f"{sys.argv[1]}/{stream}.pt", classes=["a", "b", "c", "d", "e"]).model.eval()
    x = torch.load(f"{sys.argv[1]}/{stream}-x.pt")
    torch.save(model(x).detach(), f"{sys.argv[1]}/{stream}-y.pt")
"""


def test_pruned_checkpoints_reload_identically_in_a_fresh_process(tmp_path):
    import subprocess
    import sys

    from training.checkpoint import save_checkpoint
    from training.models import build_stream

    torch.manual_seed(4)
    expected = {}
    for stream in ("spatial", "temporal"):
        model = build_stream(stream, "resnet18", 5, dropout=0.2)
        with torch.no_grad():  # distinct γ so the selection is not a tie-break
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.weight.uniform_(0.1, 1.0)
        pruned = prune_model(model, 0.2153, residual=True, round_to=8).eval()
        assert count_params(pruned) < count_params(model)
        save_checkpoint(tmp_path / f"{stream}.pt", pruned, epoch=0, config={}, classes=list("abcde"))
        x = torch.randn(2, model.conv1.in_channels, 32, 32)
        torch.save(x, tmp_path / f"{stream}-x.pt")
        with torch.no_grad():
            expected[stream] = pruned(x)
    subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(tmp_path)], check=True,
                   cwd=Path(__file__).resolve().parents[1])
    for stream, output in expected.items():
        assert torch.equal(torch.load(tmp_path / f"{stream}-y.pt"), output), stream


def test_flops_are_counted_once_per_shape(monkeypatch):
    """A chain asks for its baseline's FLOPs every step: a shape already counted is not run
    again, and another shape (a pruned model, another input size) is counted afresh."""
    from pruning import accounting
    runs = []
    counter = accounting._run_flop_counter
    monkeypatch.setattr(accounting, "_FLOPS", {})
    monkeypatch.setattr(accounting, "_run_flop_counter", lambda m, s: runs.append(s) or counter(m, s))
    model = resnet("resnet18", in_channels=3)
    first = count_flops(model, 32)
    with torch.no_grad():
        model.conv1.weight.mul_(2)  # weights do not change FLOPs
    assert count_flops(model, 32) == first == hooked_flops(model, 32) and len(runs) == 1
    pruned = prune_model(model, 0.3)
    assert count_flops(pruned, 32) == hooked_flops(pruned, 32) < first and len(runs) == 2
    assert count_flops(model, 48) == hooked_flops(model, 48) and len(runs) == 3
