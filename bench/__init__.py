"""bench: measurements -- the quality report (`bench quality`, `bench report`: every strategy on a
dataset, judged, and the rankers compared on the same samples). The speed benchmarks
(pytest-benchmark) are in bench/benchmarks/, which is not installed.

The top layer: it may import every other one (layers, bottom to top: common, judge, lm, datagen,
valuemodel, engine, bench).
"""
