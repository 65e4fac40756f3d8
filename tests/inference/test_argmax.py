"""The engine's two argmaxes (numpy on the host path, torch on the device path) agree, ties
included: the first class wins, as the label pyramid's readers and the outlines expect."""

from __future__ import annotations

import numpy as np
import torch

from inference._cpu import argmax_first, argmax_first_tensor


def test_host_and_device_argmax_agree_and_the_first_class_wins_ties() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 4, (3, 64, 80)).astype(np.float32)  # few levels: many ties
    want = np.argmax(values, axis=0).astype(np.uint8)  # numpy's own: first maximum wins
    host = argmax_first(values)
    device = argmax_first_tensor(torch.from_numpy(values)).numpy()
    assert host.dtype == device.dtype == np.uint8
    np.testing.assert_array_equal(host, want)
    np.testing.assert_array_equal(device, want)
    tied = np.full((3, 2, 2), 7.0, dtype=np.float32)
    tied[2, 0, 0] = 8.0
    assert argmax_first_tensor(torch.from_numpy(tied)).tolist() == [[2, 0], [0, 0]]
