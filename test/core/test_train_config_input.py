"""Training-config input that used to pass the settings check and fail later: as an internal error
(exit 1) deep in the model, or silently (a setting ignored, a score on the training frames)."""
import re

import pytest

from vidseg_ros.config import ConfigError
from vidseg_ros.models import create_model, resolve_arch_config
from vidseg_ros.training.config import load_train_config


@pytest.mark.parametrize('arch_config, says', [
    ({'cached_level': 1}, r'unknown argument\(s\) cached_level \(did you mean cached_levels\?\)'),
    ({'fpn_ch': '64'}, "fpn_ch: expected int, got str '64'"),
    ({'separable_p3': 1}, 'separable_p3: expected true/false'),
])
def test_arch_config_errors_name_the_key_and_are_value_errors(arch_config, says):
    """{cached_level: 1} and {fpn_ch: "64"} were TypeErrors ('not all arguments converted during string
    formatting'): 'internal error', exit 1. ArchConfigError is a ValueError (exit 2) and still a TypeError
    (what checkpoint loading catches)."""
    with pytest.raises(ValueError, match=says) as e:
        resolve_arch_config('keyframe_fpn', **arch_config)
    assert isinstance(e.value, ValueError) and isinstance(e.value, TypeError)
    with pytest.raises(ConfigError, match=f'arch_config: keyframe_fpn: {says}'):
        load_train_config(None, {'arch_config': arch_config})


def test_valid_arch_config_is_resolved_with_int_to_float():
    assert resolve_arch_config('keyframe_fpn', width_mult=1)['width_mult'] == 1.0
    assert create_model('keyframe_fpn', num_classes=3, width_mult=0.25, cached_levels=0).num_classes == 3
    assert load_train_config(None, {'arch_config': {'cached_levels': 0}}).arch_config == {'cached_levels': 0}


def test_num_classes_in_arch_config_is_refused_with_the_reason():
    """{num_classes: 3} was "create_model() got multiple values for keyword argument 'num_classes'"."""
    with pytest.raises(ConfigError, match='arch_config.num_classes: 3 is not set here: the class count comes '
                                          'from the data'):
        load_train_config(None, {'arch_config': {'num_classes': 3}})


@pytest.mark.parametrize('val_split', ['', 'head'])
def test_experiment_refuses_a_base_without_held_out_frames(tmp_path, val_split):
    """val_split '' scored every variant on its own training frames, exit 0 (train_split head: the same)."""
    from vidseg_ros.tools.experiment import run_experiment
    with pytest.raises(ConfigError, match=f"val_split '{val_split}' is no held-out split"):
        run_experiment('frames-per-video', None, out_dir=tmp_path / 'x', total_steps=1,
                       overrides={'train_split': 'head', 'val_split': val_split, 'data_root': str(tmp_path / 'no')})
    assert not (tmp_path / 'x').exists()


@pytest.mark.parametrize('mode', ['keyframe', 'sequence'])
def test_noise_copies_outside_perframe_is_refused(tmp_path, mode):
    """noise_copies was silently ignored outside perframe: the 1+19noise variant trained as '1'."""
    from vidseg_ros.tools.experiment import run_experiment
    with pytest.raises(ConfigError, match=f'noise_copies \\(19\\) applies to mode perframe only, not {mode}'):
        load_train_config(None, {'mode': mode, 'noise_copies': 19})
    assert load_train_config(None, {'mode': 'perframe', 'noise_copies': 19}).noise_copies == 19
    with pytest.raises(ConfigError, match="variant '1\\+19noise': noise_copies \\(19\\) applies to mode perframe"):
        run_experiment('frames-per-video', None, out_dir=tmp_path / 'x', total_steps=1, variants=['1+19noise'],
                       overrides={'mode': mode, 'train_split': 'head', 'val_split': 'tail'})


@pytest.mark.parametrize('name', ['', ' ', '.', '..', '../..', 'a/b', '/tmp/x', 'a\\b', 'a\0b'])
def test_a_run_name_that_is_no_plain_folder_name_is_refused(tmp_path, name):
    """name '' trained into runs_dir itself, '../..' two folders above it, 'a/b' into a sub-folder: exit 0."""
    from vidseg_ros.training.config import TrainConfig
    from vidseg_ros.training.loop import train
    says = r"name: .* must be a plain folder name \(not empty, \. or \.\., without / \\ or NUL\)"
    with pytest.raises(ConfigError, match=says):
        load_train_config(None, {'name': name})
    runs = tmp_path / 'deep' / 'runs'
    with pytest.raises(ConfigError, match=says):
        train(TrainConfig(name=name, dataset='folder', num_classes=3, val_split='', runs_dir=str(runs)), train_set=[])
    assert not (tmp_path / 'deep').exists()


@pytest.mark.parametrize('name', ['camvid_fpn', 'run 2', 'v1.0', '..x'])
def test_a_plain_folder_name_is_a_run_name(name):
    assert load_train_config(None, {'name': name}).name == name


@pytest.mark.parametrize('input_hw,fix', [([100, 200], [96, 192]), ([64], [64, 64]), ([64, 64, 64], [64, 64]),
                                          ([], [192, 256]), ([0, 64], [32, 64])])
def test_a_wrong_input_size_suggests_two_sides(input_hw, fix):
    """[64] was told 'e.g. [64]' (and [] 'e.g. []'), themselves refused for not being two sides."""
    with pytest.raises(ConfigError, match=rf'^input_hw: .* must be two multiples of 32, e\.g\. {re.escape(str(fix))}$'):
        load_train_config(None, {'input_hw': input_hw})
    assert load_train_config(None, {'input_hw': fix}).input_hw == fix     # the suggestion is taken
