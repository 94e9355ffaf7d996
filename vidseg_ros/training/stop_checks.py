"""Why a run stops mid-way, each said as what to change and what the run leaves: a loss or weights gone NaN or
inf, training labels without one labelled pixel, BatchNorm left one value per channel. Under DDP every rank
takes part in each check, so that all stop together."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from vidseg_ros.config import ConfigError

from .config import TrainConfig
from .model_setup import unwrap


def run_step(runner, batch, optimizer, clip_batch, cfg: TrainConfig, run_dir: Path, state: dict) -> dict:
    """``runner.step``; BatchNorm's refusal of one value per channel (batch_size 1 and a 32x32 crop: the
    stride-32 map is 1x1) said as the settings that cause it, not as torch's tensor sizes."""
    try:
        return runner.step(batch, optimizer, clip_batch)
    except ValueError as e:
        if 'Expected more than 1 value per channel' not in str(e):
            raise
        crop = cfg.crop_hw or cfg.input_hw
        raise ConfigError(f'batch_size {cfg.batch_size} with a {crop[0]}x{crop[1]} training crop leaves one value '
                          'per channel in the deepest (stride 32) feature map, where BatchNorm cannot train; '
                          f'raise batch_size to 2 or crop_hw (input_hw) to [64, 64]; {kept(run_dir, state)}') from e


def labelled_pixels(raw: dict, ignore_index: int) -> int:
    """Pixels of a batch's human labels that are not ``ignore_index``."""
    return sum(int((raw[k] != ignore_index).sum()) for k in ('label', 'labels') if k in raw)


def mean_over_ranks(value: float, device, world: int) -> float:
    """``value`` averaged over the ranks (every rank takes part): the loss of the global batch, logged as one
    process with that batch would log it, and NaN or inf on every rank when it is on one, so that all ranks stop
    together on a diverged loss. The check needs this one collective per step; it also buys the global loss."""
    if world == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / world


def on_any_rank(flag: bool, device, world: int) -> bool:
    """Whether ``flag`` holds on any rank (every rank takes part), so all ranks stop together: one rank that
    stopped alone would leave the others waiting in their next collective."""
    if world == 1:
        return flag
    total = torch.tensor([float(flag)], device=device)
    dist.all_reduce(total)
    return bool(total.item())


def after_divergence(cfg: TrainConfig, run_dir: Path, state: dict) -> str:
    """What to do after a diverged run, and what it left (its files hold the last finite epoch)."""
    return f'lower lr (this run: {cfg.lr:g}) and train again (--set lr=...); {kept(run_dir, state)}'


def kept(run_dir: Path, state: dict) -> str:
    """What a run that stops now leaves: the files of its last completed epoch, or nothing."""
    return (f'best.pt and last.pt of {run_dir} are as epoch {state["epoch"]} left them; output is not written'
            if state['epoch'] else 'nothing was written')


def check_weights_finite(models: list, epoch: int, cfg: TrainConfig, run_dir: Path, state: dict, device,
                         world: int) -> None:
    """ConfigError, before anything of the epoch is saved, when a weight or buffer went NaN or inf while the loss
    stayed finite (e.g. BatchNorm's running_var at lr 1e6); otherwise ``save_checkpoint`` would refuse best.pt
    mid-run and last.pt would keep the broken weights."""
    from vidseg_ros.models.model_file_checks import nonfinite_keys
    bad = next((keys for keys in (nonfinite_keys(unwrap(m).state_dict()) for m in models) if keys), [])
    if on_any_rank(bool(bad), device, world):
        what = f'{len(bad)} weight tensor(s) hold NaN or inf (first: {", ".join(bad[:3])})' if bad else \
            'the weights of another rank hold NaN or inf'
        raise ConfigError(f'after epoch {epoch + 1} (step {state["step"]}) {what}: training diverged; '
                          f'{after_divergence(cfg, run_dir, state)}')
