"""bench: measurements -- the throughput benchmarks (pytest-benchmark, bench/test_*.py) and the
quality report (`bench quality`, `bench report`: every strategy on a dataset, judged), plus the
research tools behind the shipped choices (choose_prompt, layer_probe).

The top layer: it may import every other one (layers, bottom to top: common, judge, lm, datagen,
valuemodel, engine, bench).
"""
