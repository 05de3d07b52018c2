"""Shape inference, by the formulas of each Caffe layer's Reshape (worked by hand below)."""

from __future__ import annotations

import pytest

from caffezoo.caffe.net import load_net
from caffezoo.caffe.prototxt import parse_prototxt
from caffezoo.errors import NetError


def net_of(layers: str, shape=(2, 3, 8, 8), *, strict=True, **kwargs):
    dims = " ".join(f"dim: {d}" for d in shape)
    text = (
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n' + layers
    )
    return load_net(parse_prototxt(text).message, strict=strict, **kwargs)


def top(layers: str, shape=(2, 3, 8, 8), name=None, **kwargs):
    net = net_of(layers, shape, **kwargs)
    layer = net[name] if name else net.layers[-1]
    return layer.top_shapes[0] if len(layer.top_shapes) == 1 else layer.top_shapes


def pool(params: str, shape) -> tuple:
    return top(
        f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ {params} }} }}', shape
    )


def conv(params: str, shape, kind="Convolution") -> tuple:
    return top(
        f'layer {{ name: "c" type: "{kind}" bottom: "data" top: "c" convolution_param {{ {params} }} }}',
        shape,
    )


class TestPooling:
    def test_ceil_is_the_default(self):
        # GoogLeNet pool1: ceil((112 - 3) / 2) + 1 = 56, where floor would give 55.
        assert pool("pool: MAX kernel_size: 3 stride: 2", (1, 64, 112, 112)) == (1, 64, 56, 56)
        assert pool("pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR", (1, 64, 112, 112)) == (
            1,
            64,
            55,
            55,
        )

    def test_last_window_must_start_inside_the_padded_input(self):
        # 5 + 2*1 - 2 = 5; ceil(5/2) + 1 = 4; but (4-1)*2 = 6 >= 5 + 1: one window less.
        assert pool("kernel_size: 2 stride: 2 pad: 1", (1, 1, 5, 5)) == (1, 1, 3, 3)
        # 6 + 2 - 3 = 5; ceil(5/2) + 1 = 4; (4-1)*2 = 6 < 6 + 1: kept.
        assert pool("kernel_size: 3 stride: 2 pad: 1", (1, 1, 6, 6)) == (1, 1, 4, 4)
        # No padding, no clipping: 5 - 2 = 3; ceil(3/2) + 1 = 3.
        assert pool("kernel_size: 2 stride: 2", (1, 1, 5, 5)) == (1, 1, 3, 3)

    def test_rectangular_and_global(self):
        assert pool("kernel_h: 3 kernel_w: 1 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", (1, 2, 9, 4)) == (
            1,
            2,
            5,
            4,
        )
        assert pool("pool: AVE global_pooling: true", (4, 512, 13, 13)) == (4, 512, 1, 1)

    @pytest.mark.parametrize(
        "params,words",
        [
            ("kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
            ("kernel_size: 2 pad: 2", "smaller than the kernel"),
            ("global_pooling: true stride: 2", "only pad 0 and stride 1"),
            ("kernel_size: 20", "larger than the padded input"),
        ],
    )
    def test_errors(self, params, words):
        with pytest.raises(NetError, match=words):
            pool(params, (1, 1, 8, 8))

    def test_mask_top_only_for_max(self):
        net = net_of(
            'layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "mask" '
            "pooling_param { kernel_size: 2 stride: 2 } }"
        )
        assert net["p"].top_shapes == [(2, 3, 4, 4), (2, 3, 4, 4)]
        with pytest.raises(NetError, match="only MAX"):
            net_of(
                'layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "m" '
                "pooling_param { pool: AVE kernel_size: 2 stride: 2 } }"
            )


class TestConvolution:
    def test_output_size_and_parameters(self):
        net = net_of(
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }",
            (10, 3, 227, 227),
        )
        c = net["c"]
        assert c.top_shapes == [(10, 96, 55, 55)]  # (227 - 11) / 4 + 1
        assert c.param_shapes == [(96, 3, 11, 11), (96,)]
        assert c.params == 96 * 3 * 11 * 11 + 96
        assert c.macs == 10 * 96 * 55 * 55 * 3 * 11 * 11

    def test_group_dilation_and_rectangles(self):
        assert conv("num_output: 8 kernel_size: 3 dilation: 2 pad: 2", (1, 4, 32, 32)) == (1, 8, 32, 32)
        assert conv("num_output: 4 kernel_h: 1 kernel_w: 7 pad_h: 0 pad_w: 3", (1, 4, 17, 17)) == (
            1,
            4,
            17,
            17,
        )
        assert conv("num_output: 4 kernel_size: 3 kernel_size: 5 stride: 1 stride: 2", (1, 4, 9, 9)) == (
            1,
            4,
            7,
            3,
        )
        net = net_of(
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 6 kernel_size: 1 group: 3 bias_term: false } }"
        )
        assert net["c"].param_shapes == [(6, 1, 1, 1)]

    def test_cpp_integer_division(self):
        # (2 - 3) / 2 truncates to 0 in C++, so Caffe gives 1 where floor division would give 0.
        assert conv("num_output: 1 kernel_size: 3 stride: 2", (1, 1, 2, 2)) == (1, 1, 1, 1)

    def test_deconvolution(self):
        # FCN upscore: 2 * (16 - 1) + 4 - 2 * 1 = 32; weights are (C_in, num_output / group, k, k).
        net = net_of(
            'layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" '
            "convolution_param { num_output: 21 kernel_size: 4 stride: 2 pad: 1 bias_term: false } }",
            (1, 21, 16, 16),
        )
        assert net["up"].top_shapes == [(1, 21, 32, 32)]
        assert net["up"].param_shapes == [(21, 21, 4, 4)]

    def test_shared_weights_over_several_bottoms(self):
        net = net_of(
            'layer { name: "s" type: "Split" bottom: "data" top: "a" top: "b" }\n'
            'layer { name: "c" type: "Convolution" bottom: "a" bottom: "b" top: "ca" top: "cb" '
            "convolution_param { num_output: 2 kernel_size: 3 } }"
        )
        assert net["c"].top_shapes == [(2, 2, 6, 6), (2, 2, 6, 6)]

    @pytest.mark.parametrize(
        "params,words",
        [
            ("num_output: 4 kernel_size: 3 group: 2", "multiple of group"),
            ("num_output: 4", "kernel size must be given"),
            ("num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
            ("num_output: 4 kernel_size: 3 kernel_size: 3 kernel_size: 3", "once per spatial axis"),
        ],
    )
    def test_errors(self, params, words):
        with pytest.raises(NetError, match=words):
            conv(params, (1, 3, 8, 8))


def test_inner_product_axis_and_transpose():
    net = net_of(
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        "inner_product_param { num_output: 7 axis: 2 transpose: true } }",
        (2, 3, 4, 5),
    )
    assert net["ip"].top_shapes == [(2, 3, 7)]
    assert net["ip"].param_shapes == [(20, 7), (7,)]
    assert net["ip"].macs == 6 * 20 * 7


@pytest.mark.parametrize(
    "params,shape,expected",
    [
        ("shape { dim: 0 dim: -1 }", (2, 3, 4, 5), (2, 60)),
        ("shape { dim: -1 dim: 0 dim: 1 }", (2, 8, 2), (4, 8, 1)),  # 0 copies the input dim at its index
        ("shape { dim: 3 dim: 1 } axis: 1 num_axes: 1", (2, 3, 4), (2, 3, 1, 4)),
        ("shape { dim: 1 } axis: -1 num_axes: 0", (2, 3, 4), (2, 3, 4, 1)),
        ("shape { dim: 1 } num_axes: 0", (2, 3), (1, 2, 3)),
    ],
)
def test_reshape(params, shape, expected):
    assert (
        top(
            f'layer {{ name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param {{ {params} }} }}',
            shape,
        )
        == expected
    )


def test_reshape_errors():
    with pytest.raises(NetError, match="holds 12 values"):
        top(
            'layer { name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param { shape { dim: 2 dim: 6 } } }',
            (2, 3, 4),
        )
    with pytest.raises(NetError, match="at most one"):
        top(
            'layer { name: "r" type: "Reshape" bottom: "data" top: "r" '
            "reshape_param { shape { dim: -1 dim: -1 } } }",
            (2, 3),
        )


@pytest.mark.parametrize(
    "params,expected",
    [
        ("", (2, 60)),
        ("axis: 2", (2, 3, 20)),
        ("axis: 1 end_axis: -2", (2, 12, 5)),
    ],
)
def test_flatten(params, expected):
    assert (
        top(
            f'layer {{ name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param {{ {params} }} }}',
            (2, 3, 4, 5),
        )
        == expected
    )


def test_axes_out_of_range():
    with pytest.raises(NetError, match="axis 4 is out of range for a 4-D blob"):
        top('layer { name: "s" type: "Softmax" bottom: "data" top: "s" softmax_param { axis: 4 } }')
    with pytest.raises(NetError, match="end_axis 1 comes before axis 2"):
        top(
            'layer { name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param { axis: 2 end_axis: 1 } }'
        )
    assert top('layer { name: "s" type: "Softmax" bottom: "data" top: "s" softmax_param { axis: -1 } }') == (
        2,
        3,
        8,
        8,
    )


def test_concat_and_slice():
    two = 'layer { name: "s" type: "Split" bottom: "data" top: "a" top: "b" }\n'
    assert top(
        two + 'layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "c" concat_param { axis: -1 } }',
        (2, 3, 4),
    ) == (2, 3, 8)
    assert top(
        two + 'layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "c" '
        "concat_param { concat_dim: 0 } }",
        (2, 3, 4),
    ) == (4, 3, 4)
    assert top(
        'layer { name: "s" type: "Slice" bottom: "data" top: "a" top: "b" top: "c" '
        "slice_param { axis: 1 slice_point: 1 slice_point: 5 } }",
        (2, 8),
    ) == [(2, 1), (2, 4), (2, 3)]
    assert top('layer { name: "s" type: "Slice" bottom: "data" top: "a" top: "b" }', (2, 8)) == [
        (2, 4),
        (2, 4),
    ]
    with pytest.raises(NetError, match="do not divide"):
        top('layer { name: "s" type: "Slice" bottom: "data" top: "a" top: "b" top: "c" }', (2, 8))
    net = net_of(
        'layer { name: "d2" type: "Input" top: "d2" input_param { shape { dim: 2 dim: 4 dim: 5 } } }\n'
        'layer { name: "c" type: "Concat" bottom: "data" bottom: "d2" top: "c" }',
        (2, 3, 4),
        strict=False,
    )
    assert "all must match 2x3x4 except on axis 1" in net["c"].problem


REF = (
    'layer { name: "ref" type: "Input" top: "ref" input_param { shape { dim: 1 dim: 3 dim: 34 dim: 34 } } }\n'
)


def test_crop_like_fcn():
    net = net_of(
        REF + 'layer { name: "crop" type: "Crop" bottom: "data" bottom: "ref" top: "crop" '
        "crop_param { axis: 2 offset: 5 } }",
        (1, 21, 44, 44),
    )
    assert net["crop"].top_shapes == [(1, 21, 34, 34)]
    with pytest.raises(NetError, match="cannot crop 34 from 44 at offset 11"):
        net_of(
            REF + 'layer { name: "crop" type: "Crop" bottom: "data" bottom: "ref" top: "crop" '
            "crop_param { offset: 11 } }",
            (1, 21, 44, 44),
        )


def test_argmax():
    layer = 'layer {{ name: "a" type: "ArgMax" bottom: "data" top: "a" argmax_param {{ {} }} }}'
    assert top(layer.format("top_k: 3 out_max_val: true"), (2, 10, 1, 1)) == (2, 2, 3, 1)
    assert top(layer.format("top_k: 1"), (2, 10)) == (2, 1, 1)  # padded to three axes
    assert top(layer.format("axis: 1 top_k: 3"), (2, 10, 4, 4)) == (2, 3, 4, 4)


def test_affine_layers_expect_their_blobs():
    net = net_of(
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }\n'
        'layer { name: "sc" type: "Scale" bottom: "data" top: "data" scale_param { bias_term: true } }\n'
        'layer { name: "sc2" type: "Scale" bottom: "data" top: "s2" scale_param { num_axes: -1 } }\n'
        'layer { name: "pr" type: "PReLU" bottom: "data" top: "p" prelu_param { channel_shared: true } }\n'
        'layer { name: "b" type: "Bias" bottom: "data" top: "b" bias_param { axis: 0 num_axes: 2 } }'
    )
    assert net["bn"].param_shapes == [(3,), (3,), (1,)]
    assert net["sc"].param_shapes == [(3,), (3,)]
    assert net["sc2"].param_shapes == [(3, 8, 8)]
    assert net["pr"].param_shapes == [()]
    assert net["b"].param_shapes == [(2, 3)]


def test_eltwise_rules():
    two = 'layer { name: "s" type: "Split" bottom: "data" top: "a" top: "b" }\n'
    assert top(
        two + 'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "e" '
        "eltwise_param { coeff: 1 coeff: -1 } }"
    ) == (2, 3, 8, 8)
    with pytest.raises(NetError, match="SUM only"):
        top(
            two + 'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "e" '
            "eltwise_param { operation: PROD coeff: 1 coeff: 2 } }"
        )


def test_ssd_and_segmentation_fork_layers():
    net = net_of(
        'layer { name: "perm" type: "Permute" bottom: "data" top: "perm" '
        "permute_param { order: 0 order: 2 order: 3 order: 1 } }\n"
        'layer { name: "prior" type: "PriorBox" bottom: "data" bottom: "data" top: "prior" prior_box_param { '
        "min_size: 30 max_size: 60 aspect_ratio: 2 aspect_ratio: 2.0000001 flip: true } }\n"
        'layer { name: "norm" type: "Normalize" bottom: "data" top: "norm" norm_param { channel_shared: false } }\n'
        'layer { name: "zoom" type: "Interp" bottom: "data" top: "zoom" interp_param { zoom_factor: 8 } }\n'
        'layer { name: "shrink" type: "Interp" bottom: "zoom" top: "shrink" interp_param { shrink_factor: 8 } }\n'
        'layer { name: "up" type: "Upsample" bottom: "data" top: "up" upsample_param { scale: 2 } }\n'
        'layer { name: "det" type: "DetectionOutput" bottom: "data" top: "det" }',
        (1, 3, 19, 19),
    )
    assert net["perm"].top_shapes == [(1, 19, 19, 3)]
    # aspect ratios 1, 2, 1/2 (the near-duplicate 2 dropped) for one min_size, plus one for max_size
    assert net["prior"].top_shapes == [(1, 2, 19 * 19 * 4 * 4)]
    assert net["norm"].param_shapes == [(3,)]
    assert net["zoom"].top_shapes == [(1, 3, 19 + 18 * 7, 19 + 18 * 7)]
    assert net["shrink"].top_shapes == [(1, 3, 19, 19)]
    assert net["up"].top_shapes == [(1, 3, 38, 38)]
    assert net["det"].top_shapes == [None]  # depends on the detections


def test_unknown_type_is_a_problem_and_stops_shapes():
    net = net_of(
        'layer { name: "x" type: "Sparkle" bottom: "data" top: "x" }\n'
        'layer { name: "r" type: "ReLU" bottom: "x" top: "r" }',
        strict=False,
    )
    assert "unknown layer type 'Sparkle'" in net["x"].problem
    assert net["r"].top_shapes == [None] and net["r"].problem is None
    with pytest.raises(NetError, match="Sparkle"):
        net_of('layer { name: "x" type: "Sparkle" bottom: "data" top: "x" }')


def test_input_shapes_override():
    net = net_of(
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        "inner_product_param { num_output: 2 } }",
        input_shapes={"data": (1, 3, 4, 4)},
    )
    assert net.inputs == {"data": (1, 3, 4, 4)} and net["ip"].top_shapes == [(1, 2)]
