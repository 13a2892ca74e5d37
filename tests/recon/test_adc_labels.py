"""Pulseq label bookkeeping at ADC events (mritwin.sequence.labels)."""

import numpy as np
import pytest

import mritwin as mt
from mritwin.sequence.labels import adc_labels, labels_used, sample_adc_index


def _adc(n=4):
    return mt.make_adc(n, dwell=1e-5)


def test_set_and_increment_apply_in_block_order_before_the_adc():
    seq = mt.Sequence([
        mt.Block(labels=[mt.make_label("LIN", 5), mt.make_label("SLC", 2)]),  # no ADC
        mt.Block(adc=_adc(), labels=[mt.make_label("LIN", 1, increment=True)]),  # 6
        mt.Block(adc=_adc(2), labels=[mt.make_label("LIN", 0), mt.make_label("LIN", 2, increment=True),
                                      mt.make_label("REV", 1)]),  # set then inc -> 2
        mt.Block(adc=_adc(), labels=[mt.make_label("ECO", 1, increment=True)]),
        mt.Block(labels=[mt.make_label("LIN", -3, increment=True)]),
        mt.Block(adc=_adc(3)),
    ])
    lab = adc_labels(seq)
    assert lab["LIN"].tolist() == [6, 2, 2, -1]
    assert lab["SLC"].tolist() == [2, 2, 2, 2]
    assert lab["REV"].tolist() == [0, 1, 1, 1]  # flags persist until set again
    assert lab["ECO"].tolist() == [0, 0, 1, 1]
    assert lab["PAR"].tolist() == [0, 0, 0, 0]
    assert labels_used(seq) == {"LIN", "SLC", "REV", "ECO"}
    assert sample_adc_index(seq).tolist() == [0] * 4 + [1] * 2 + [2] * 4 + [3] * 3


def test_no_adc_gives_empty_arrays():
    seq = mt.Sequence([mt.Block(labels=[mt.make_label("LIN", 1)], duration=1e-3)])
    lab = adc_labels(seq)
    assert lab["LIN"].shape == (0,)
    assert set(lab) == set(mt.sequence.events.LABEL_NAMES)


def test_rejects_non_sequence():
    with pytest.raises(TypeError, match="mritwin.Sequence"):
        adc_labels([1, 2])


def test_label_arrays_are_integers():
    seq = mt.Sequence([mt.Block(adc=_adc(), labels=[mt.make_label("AVG", 3)])])
    assert adc_labels(seq)["AVG"].dtype == np.int64
