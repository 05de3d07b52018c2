"""Names of Caffe layer types across the format's eras, and where their parameters live.

>>> V1_TYPES[4], V0_TYPES["innerproduct"]
('Convolution', 'InnerProduct')
>>> param_field("Deconvolution")
'convolution_param'
>>> "Permute" in KNOWN_TYPES, "Convolutoin" in KNOWN_TYPES
(True, False)
"""

from __future__ import annotations

__all__ = ["BVLC_TYPES", "FORK_TYPES", "KNOWN_TYPES", "V0_TYPES", "V1_ENUM", "V1_TYPES", "param_field"]


# V1 enum value (V1LayerParameter.LayerType) -> V2 type string, as Caffe's
# UpgradeV1LayerType maps them.
V1_TYPES: dict[int, str] = {
    0: "",
    35: "AbsVal",
    1: "Accuracy",
    30: "ArgMax",
    2: "BNLL",
    3: "Concat",
    37: "ContrastiveLoss",
    4: "Convolution",
    39: "Deconvolution",
    5: "Data",
    6: "Dropout",
    32: "DummyData",
    7: "EuclideanLoss",
    25: "Eltwise",
    38: "Exp",
    8: "Flatten",
    9: "HDF5Data",
    10: "HDF5Output",
    28: "HingeLoss",
    11: "Im2col",
    12: "ImageData",
    13: "InfogainLoss",
    14: "InnerProduct",
    15: "LRN",
    29: "MemoryData",
    16: "MultinomialLogisticLoss",
    34: "MVN",
    17: "Pooling",
    26: "Power",
    18: "ReLU",
    19: "Sigmoid",
    27: "SigmoidCrossEntropyLoss",
    36: "Silence",
    20: "Softmax",
    21: "SoftmaxWithLoss",
    22: "Split",
    33: "Slice",
    23: "TanH",
    24: "WindowData",
    31: "Threshold",
}
V1_ENUM: dict[str, int] = {name: value for value, name in V1_TYPES.items() if name}

# V0 type strings (2013) -> V2 type strings, through Caffe's UpgradeV0LayerType.
V0_TYPES: dict[str, str] = {
    "accuracy": "Accuracy",
    "bnll": "BNLL",
    "concat": "Concat",
    "conv": "Convolution",
    "data": "Data",
    "dropout": "Dropout",
    "euclidean_loss": "EuclideanLoss",
    "flatten": "Flatten",
    "hdf5_data": "HDF5Data",
    "hdf5_output": "HDF5Output",
    "im2col": "Im2col",
    "images": "ImageData",
    "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MultinomialLogisticLoss",
    "pool": "Pooling",
    "relu": "ReLU",
    "sigmoid": "Sigmoid",
    "softmax": "Softmax",
    "softmax_loss": "SoftmaxWithLoss",
    "split": "Split",
    "tanh": "TanH",
    "window_data": "WindowData",
}

# Every type BVLC Caffe registers (its layer factory), then the fork types
# caffezoo understands (shapes, parameters).
BVLC_TYPES = frozenset(
    """
AbsVal Accuracy ArgMax BNLL BatchNorm BatchReindex Bias Clip Concat ContrastiveLoss Convolution Crop
Data Deconvolution Dropout DummyData ELU Eltwise Embed EuclideanLoss Exp Filter Flatten HDF5Data
HDF5Output HingeLoss Im2col ImageData InfogainLoss InnerProduct Input LRN LSTM LSTMUnit Log MVN
MemoryData MultinomialLogisticLoss PReLU Parameter Pooling Power Python RNN ReLU Reduction Reshape SPP
Scale Sigmoid SigmoidCrossEntropyLoss Silence Slice Softmax SoftmaxWithLoss Split Swish TanH Threshold
Tile WindowData
""".split()
)
FORK_TYPES = frozenset(
    """
Permute Normalize PriorBox DetectionOutput Interp BN Upsample ConvolutionDepthwise DepthwiseConvolution
Axpy ReLU6 ShuffleChannel ROIPooling PSROIPooling Proposal
""".split()
)
KNOWN_TYPES = BVLC_TYPES | FORK_TYPES

# Type -> the LayerParameter field holding its parameters, where the name
# does not follow the snake_case rule below.
_PARAM_FIELDS = {
    "Deconvolution": "convolution_param",
    "ConvolutionDepthwise": "convolution_param",
    "DepthwiseConvolution": "convolution_param",
    "Im2col": "convolution_param",
    "InnerProduct": "inner_product_param",
    "BatchNorm": "batch_norm_param",
    "ImageData": "image_data_param",
    "HDF5Data": "hdf5_data_param",
    "HDF5Output": "hdf5_output_param",
    "WindowData": "window_data_param",
    "MemoryData": "memory_data_param",
    "DummyData": "dummy_data_param",
    "SoftmaxWithLoss": "softmax_param",
    "ContrastiveLoss": "contrastive_loss_param",
    "HingeLoss": "hinge_loss_param",
    "InfogainLoss": "infogain_loss_param",
    "ArgMax": "argmax_param",
    "TanH": "tanh_param",
    "ReLU": "relu_param",
    "PReLU": "prelu_param",
    "ELU": "elu_param",
    "LRN": "lrn_param",
    "MVN": "mvn_param",
    "SPP": "spp_param",
    "LSTM": "recurrent_param",
    "RNN": "recurrent_param",
    "Normalize": "norm_param",
    "PriorBox": "prior_box_param",
    "DetectionOutput": "detection_output_param",
    "BN": "bn_param",
    "ShuffleChannel": "shuffle_channel_param",
    "ROIPooling": "roi_pooling_param",
    "PSROIPooling": "psroi_pooling_param",
    "ReLU6": "relu6_param",
}


def param_field(layer_type: str) -> str | None:
    """The name of the ``*_param`` field of LayerParameter for ``layer_type``, if it has one."""
    from .caffe_pb2 import LayerParameter

    name = _PARAM_FIELDS.get(layer_type)
    if name is None:
        snake = "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(layer_type))
        name = snake + "_param"
    return name if name in LayerParameter.DESCRIPTOR.fields_by_name else None
