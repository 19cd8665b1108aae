"""Notebook display: HTML tables for Model, Param and summary; histograms per layer."""

from __future__ import annotations

import re

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn


def cells(html: str) -> list[list[str]]:
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", html)]


@pytest.fixture
def net():
    net = up.build(nn.Sequential(nn.Sequential(nn.Dense(8, activation="relu")), nn.Dense(3)),
                   backend="torch")
    up.initialize(net, init.Normal(std=0.01), seed=0)
    return net


def test_model_html_is_a_table_of_layers_with_parameter_shapes(net):
    html = net._repr_html_()
    assert html.startswith("<table")
    rows = cells(html)
    assert rows[0] == ["layer", "kind", "parameters"]
    assert [r[0].replace("\u00a0", " ").strip() for r in rows[1:]] == ["(model)", "0", "0", "1"]
    assert rows[-1][2] == "weight (3, None), bias (3,)"
    net(np.ones((2, 4), np.float32))
    rows = cells(net._repr_html_())
    assert rows[3] == ["\u00a0\u00a0\u00a0\u00a00", "Dense(4 -&gt; 8, relu)",
                       "weight (8, 4), bias (8,)"]
    assert rows[4][2] == "weight (3, 8), bias (3,)"


def test_param_html_names_shape_state_and_ties():
    shared = nn.Dense(4)
    net = up.build(nn.Sequential(shared, shared), backend="torch")
    rows = cells(net[0].weight._repr_html_())
    assert rows[0] == ["name", "shape", "dtype", "params", "state", "role", "tied with"]
    assert rows[1] == ["0.weight", "(4, None)", "float32", "?", "deferred", "weight", "1.weight"]


def test_summary_html_has_the_parameter_table_and_totals(net):
    net(np.ones((2, 4), np.float32))
    s = up.summary(net)
    html = s._repr_html_()
    assert "<pre>Sequential(" in html and "Total params: 67" in html
    rows = cells(html)
    assert rows[0] == ["name", "shape", "dtype", "params", "state", "tied with"]
    assert rows[1:] == [["0.0.weight", "(8, 4)", "float32", "32", "materialized", ""],
                        ["0.0.bias", "(8,)", "float32", "8", "materialized", ""],
                        ["1.weight", "(3, 8)", "float32", "24", "materialized", ""],
                        ["1.bias", "(3,)", "float32", "3", "materialized", ""]]
    assert str(s).startswith("Sequential(")  # the text is unchanged


def test_html_escapes_names():
    from unifparam._display import table
    html = table(["a<"], [["<script>"]])
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_plot_histograms_one_axes_per_layer(net):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    net(np.ones((2, 4), np.float32))
    fig = up.plot_histograms(net)
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["0.0: Normal", "1: Normal"]
    counts = [sum(p.get_height() for p in ax.patches) for ax in fig.axes]
    assert counts == [32 + 8, 24 + 3]
    weights_only = up.plot_histograms(net[1], include_bias=False, bins=5)
    assert [sum(p.get_height() for p in ax.patches) for ax in weights_only.axes] == [24]
    assert len(weights_only.axes[0].patches) == 5
    assert fig._repr_png_().startswith(b"\x89PNG")


def test_plot_histograms_needs_values(net):
    pytest.importorskip("matplotlib")
    with pytest.raises(up.DeferredParameterError):
        up.plot_histograms(net)


def test_display_imports_nothing_until_used(python):
    proc = python("import sys, unifparam; print('matplotlib' in sys.modules, "
                  "'unifparam._display' in sys.modules, callable(unifparam.plot_histograms), "
                  "'matplotlib' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "True", "False"]
