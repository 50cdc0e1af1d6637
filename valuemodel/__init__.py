"""valuemodel: the value model -- a decoder LM with a one-output sigmoid head that predicts, at every
token, P(the finished program passes its tests) -- its training, evaluation and checkpoints.

`valuemodel.model`: ValueModel (a delta on a base model), per-token and incremental scoring;
`valuemodel.train`: the training loop, probe fit and cross-validation on a datagen export;
`valuemodel.metrics`, `valuemodel.evaluate`: the report; `valuemodel.cli`: the `valuemodel` command.
`default/` and `qwen/` are the shipped checkpoints.

May import common, judge, lm and datagen (whose export rows it trains on), never engine: the
search reads values through engine.batch (layers, bottom to top: common, judge, lm, datagen,
valuemodel, engine, bench; each imports only the ones below it).
"""
