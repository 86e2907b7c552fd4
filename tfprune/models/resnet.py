"""ResNet-18, CIFAR variant (He et al. 2016 as trained on 32 x 32 images): a 3 x 3 stem without pooling, four
stages of two basic blocks (64, 128, 256, 512 filters; stride 2 from the second stage on, with a 1 x 1
projection shortcut where the shape changes), batch normalisation, global average pooling, one Dense.
11,173,962 trainable parameters for 10 classes (and 9,600 batch-norm statistics). Its Conv2D and Dense kernels are what `tfprune.prune` wraps."""
from __future__ import annotations

from tfprune._keras import keras

STAGES = (64, 128, 256, 512)


def _block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, stride, use_bias=False, name=f"{name}_shortcut")(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def build_resnet18(classes: int = 10, input_shape=(32, 32, 3), seed: int | None = None) -> keras.Model:
    if seed is not None:
        keras.utils.set_random_seed(seed)
    image = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(64, 3, padding="same", use_bias=False, name="stem_conv")(image)
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.BatchNormalization(name="stem_bn")(x))
    for stage, filters in enumerate(STAGES):
        for block in range(2):
            x = _block(x, filters, 2 if stage and not block else 1, f"stage{stage + 1}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(image, keras.layers.Dense(classes, name="logits")(x), name="resnet18_cifar")
