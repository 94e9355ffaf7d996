"""Truncated BPTT (mode: sequence, tbptt: k): the state is detached every k steps, so a label at step t
trains only the steps since the last cut; checked against the recurrence written out by hand."""
import torch

from support.tiny_models import TinyRecurrent

from vidseg_ros.training.config import TrainConfig
from vidseg_ros.training.steps import Batch, StepRunner, normalize

HW = (16, 16)


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _runner_grads(tbptt: int, batch: Batch) -> torch.Tensor:
    torch.manual_seed(0)
    model = TinyRecurrent()
    cfg = TrainConfig(mode='sequence', arch='recurrent_unet', tbptt=tbptt, num_classes=3, ignore_index=255, amp=False)
    loss, _ = StepRunner(cfg, model, torch.device('cpu')).loss(batch)
    loss.backward()
    return _grads(model)


def _by_hand(cut_at: int, batch: Batch) -> torch.Tensor:
    """Steps 0..3 with the state detached before step ``cut_at``; the loss at step 3 (its labels)."""
    torch.manual_seed(0)
    model = TinyRecurrent()
    frames, state = normalize(batch['frames']), None
    for t in range(4):
        if t == cut_at:
            state = tuple(s.detach() for s in state)
        logits, state = model.step(frames[:, t], state)
    up = torch.nn.functional.interpolate(logits, size=HW, mode='bilinear', align_corners=False)
    torch.nn.functional.cross_entropy(up, batch['labels'][:, 3], ignore_index=255).backward()
    return _grads(model)


def test_tbptt_cuts_the_gradient_every_k_steps():
    g = torch.Generator().manual_seed(2)
    batch = Batch({'frames': torch.rand(2, 4, 3, *HW, generator=g),
                   'labels': torch.randint(0, 3, (2, 4, *HW), generator=g), 'label_pos': torch.tensor([3, 3])})
    cut = _runner_grads(2, batch)
    torch.testing.assert_close(cut, _by_hand(2, batch))              # k = 2: cut before step 2 only
    torch.testing.assert_close(_runner_grads(0, batch), _by_hand(-1, batch))   # off: full BPTT
    assert not torch.allclose(cut, _by_hand(-1, batch))             # and the cut does change the gradient
