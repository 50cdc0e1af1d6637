"""engine: the decoding engine -- every strategy over one DecodeConfig, a policy and a value model.

`engine.baselines` (greedy, sample), `engine.best_of_k`, `engine.beam`, `engine.tree` (early-stopping
tree search over forking tokens); `engine.batch`: the batched search frontier and its value tracks;
`engine.result`: DecodeConfig, the result types and the ValueFunction interface; `engine.run`: the
strategy table, model loading and decoding many problems (the library `decode` and `bench quality`
call); `engine.options`: their shared command-line options; `engine.cli`: the `decode` command.

May import every layer below it: common, judge, lm, datagen and valuemodel (layers, bottom to top:
common, judge, lm, datagen, valuemodel, engine, bench; each imports only the ones below it).
"""
